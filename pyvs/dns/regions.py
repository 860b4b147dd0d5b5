"""Client region: a CIDR -> region map, longest prefix wins, answers memoised.

The region decides the answer of ``sites`` records and ``policy: subnet`` pools. It is
read from the EDNS Client Subnet option when the query carries one (the client behind
a public resolver), else from the address the query came from (the resolver). A
lookup walks the prefixes longest first; the result per source address is memoised
(bounded), so a resolver asking again costs one dict lookup.
"""

from __future__ import annotations

import ipaddress

CACHE_MAX = 65536


class RegionMap:
    """CIDRs to region indexes (0 = no region; ``names[i]`` is region ``i``)."""

    def __init__(self, regions: dict[str, str], names: list[str | None]) -> None:
        index = {n: i for i, n in enumerate(names)}
        nets = [(ipaddress.ip_network(c, strict=False), index[r]) for c, r in regions.items()]
        nets.sort(key=lambda item: -item[0].prefixlen)
        self.nets = nets
        self.empty = not nets
        self.memo: dict[str, int] = {}

    def region_of(self, address: str) -> int:
        """The region index of an IP address given as text; 0 when none matches."""
        found = self.memo.get(address)
        if found is not None:
            return found
        found = 0
        if self.nets:
            try:
                ip = ipaddress.ip_address(address.partition("%")[0])
            except ValueError:
                ip = None
            if ip is not None:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                for net, region in self.nets:
                    if ip.version == net.version and ip in net:
                        found = region
                        break
        if len(self.memo) >= CACHE_MAX:
            self.memo.clear()
        self.memo[address] = found
        return found

    def region_of_subnet(self, address: str, prefix: int) -> int:
        """The region of an EDNS Client Subnet (address/prefix): that of its network address."""
        try:
            net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        except ValueError:
            return 0
        return self.region_of(str(net.network_address))

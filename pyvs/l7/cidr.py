"""Client networks: the one parser and matcher of CIDR lists (ACLs, ``source`` conditions,
their validation in the config).

Why one module: a list that ``pyvs check`` accepts must be a list every worker can
build, and a client address must fall in or out of a network the same way whether an
access list or a route condition asks. Networks are kept as merged, sorted integer
ranges per family, so a membership test is one bisection whatever the list's length;
IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 client) count as
IPv4, in the lists and in the addresses tested.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Sequence

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> list[_Network]:
    """The network(s) ``text`` names: a CIDR, a single address, or ``all`` (both families).

    Host bits set (``10.0.0.1/8``) are an error, as a typo there widens or narrows a
    rule silently.
    """
    if text.strip() == "all":
        return [ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")]
    try:
        net = ipaddress.ip_network(text.strip())
    except ValueError as exc:
        raise ValueError(f"source ACL: {text!r} is not an address or CIDR network: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return [ipaddress.IPv4Network((mapped, net.prefixlen - 96))]
    return [net]


class Ranges:
    """Networks as merged, sorted integer ranges per family; membership by bisection."""

    __slots__ = ("empty", "v4", "v6")

    def __init__(self, networks: Sequence[_Network]) -> None:
        self.empty = not networks
        self.v4 = self._merge([n for n in networks if n.version == 4])
        self.v6 = self._merge([n for n in networks if n.version == 6])

    @staticmethod
    def _merge(networks: list[_Network]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
        starts: list[int] = []
        ends: list[int] = []
        for first, last in spans:
            if ends and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)
        return tuple(starts), tuple(ends)

    def contains(self, version: int, addr: int) -> bool:
        starts, ends = self.v4 if version == 4 else self.v6
        i = bisect_right(starts, addr) - 1
        return i >= 0 and addr <= ends[i]


def parse_address(ip: bytes) -> tuple[int, int] | None:
    """``(version, integer)`` of a textual address, IPv4-mapped IPv6 as IPv4; None if unparsable."""
    try:
        text = ip.decode("ascii")
        if b":" not in ip:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.partition("%")[0]), "big")
    except (UnicodeDecodeError, OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


def parse_networks(values: Sequence[str]) -> list[_Network]:
    """Every network of a configured list; ValueError names the first bad entry."""
    return [net for text in values for net in parse_network(text)]


class NetworkSet:
    """``ip in networks`` for the addresses connections report (bytes), cached per address."""

    __slots__ = ("_cache", "ranges", "text")

    CACHE_SIZE = 2048

    def __init__(self, cidrs: Sequence[str]) -> None:
        self.ranges = Ranges(parse_networks(cidrs))
        self.text = ", ".join(cidrs)
        self._cache: dict[bytes, bool] = {}

    def __contains__(self, ip: bytes) -> bool:
        hit = self._cache.get(ip)
        if hit is None:
            parsed = parse_address(ip)
            hit = parsed is not None and self.ranges.contains(*parsed)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()  # a bound, not an LRU: clients are many, lists few
            self._cache[ip] = hit
        return hit

"""Allow or refuse a request by the client's address.

Theory of operation
-------------------
The rule is simpler than nginx's ``allow``/``deny`` (first match in written order):
an address is refused when it is in a ``deny`` network, or when ``allow`` is not
empty and it is in none of its networks. ``deny`` wins wherever the lists overlap,
so the order of the lines never matters, and "allow a subnet except one host" is
written as ``allow: [10.0.0.0/8], deny: [10.0.0.5]``. (nginx's
``deny 10.0.0.5; allow 10.0.0.0/8; deny all;`` means the same.)

At load time each list becomes, per address family, a sorted tuple of merged
``[first, last]`` integer ranges (:mod:`pyvs.l7.cidr`, shared with ``source``
conditions and the config's validation), so a lookup is one bisection whatever the
number of networks. In front of that sits a small per-filter dict from
the client address as bytes to the decision: a keep-alive connection, or a client
that comes back, costs one dict lookup per request. The dict is emptied when it
reaches :attr:`SourceAcl.CACHE_SIZE` entries (a bound, not an LRU: refilling it
costs ~1 µs per address, less than LRU bookkeeping on every hit would).

The address is ``ex.view.client_ip`` (after trusted-proxy / PROXY protocol
handling). An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack
socket reports) is checked as the IPv4 address it is; configured IPv4-mapped
networks are converted the same way. An address that cannot be parsed matches no
network: it is refused when there is an ``allow`` list, allowed otherwise.

The refusal is one :class:`~pyvs.l7.filters.base.Reply` built at load time, with
``Cache-Control: no-store``: the answer depends on who asked, and a shared cache in
front of pyvs (a 404 is cacheable by default) must not serve it to anyone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyvs.l7.cidr import Ranges, parse_address, parse_networks
from pyvs.l7.filters.base import Filter, Reply, Verdict

if TYPE_CHECKING:
    from pyvs.l7.filters.base import FilterExchange

__all__ = ["SourceAcl", "parse_address"]


class SourceAcl(Filter):
    """Refuse requests by client address (see the module docstring for the rule)."""

    __slots__ = ("_allow", "_cache", "_deny", "_desc", "_reply", "status")
    name = "source_acl"
    requests = True
    CACHE_SIZE = 2048

    def __init__(self, allow: Sequence[str] = (), deny: Sequence[str] = (), status: int = 403) -> None:
        if isinstance(allow, str) or isinstance(deny, str):
            raise TypeError("source ACL: allow and deny are lists of networks, not one string")
        if not allow and not deny:
            raise ValueError("source ACL: give allow or deny networks")
        if not 400 <= status <= 599:
            raise ValueError(f"source ACL: status {status} is not an error status (400-599)")
        self._allow = Ranges(parse_networks(allow))
        self._deny = Ranges(parse_networks(deny))
        self.status = status
        self._reply = Reply(
            status,
            b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n",
            b"pyvs: access denied.\n",
        )
        self._cache: dict[bytes, bool] = {}
        parts = []
        if allow:
            parts.append("allow " + ", ".join(allow))
        if deny:
            parts.append("deny " + ", ".join(deny))
        self._desc = f"source ACL: {'; '.join(parts)} (deny wins; else {status})"

    def allowed(self, ip: bytes) -> bool:
        """The decision for ``ip`` without the cache."""
        addr = parse_address(ip)
        if addr is None:
            return self._allow.empty
        if self._deny.contains(*addr):
            return False
        return self._allow.empty or self._allow.contains(*addr)

    def on_request(self, ex: FilterExchange) -> Verdict:
        ip = ex.view.client_ip
        ok = self._cache.get(ip)
        if ok is None:
            ok = self.allowed(ip)
            cache = self._cache
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            cache[ip] = ok
        if ok:
            return Verdict.CONTINUE
        ex.reply = self._reply
        return Verdict.RESPOND

    def describe(self) -> str:
        return self._desc

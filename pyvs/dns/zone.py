"""Zones compiled from the config: names, static RRsets, balanced names, lookup.

Theory of operation
-------------------
A :class:`Zone` is built once per config (per worker) from a :class:`DnsZone`. It holds
every configured owner name as a :class:`Node` (static RRsets by type, and at most one
balanced record whose A/AAAA data the answer layer fills in from health), the *empty
non-terminals* (``b.example.com`` exists when only ``a.b.example.com`` is configured),
and the apex SOA and NS.

:meth:`Zone.find` implements the part of RFC 1034 section 4.3.2 an authoritative server
without delegations needs, with RFC 4592 wildcards: an exact node; else an empty
non-terminal (the name exists: NODATA, never NXDOMAIN); else the *closest encloser*
(the longest existing ancestor) and its ``*`` child as the source of synthesis; else
NXDOMAIN. Everything here is pure and case-insensitive (dnspython names compare and hash
without case); owner names of answers are the query's name, so case is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pyvs.config.dns_schema import DnsRecord, DnsZone

WILD = dns.name.Name([b"*"])


def parse_rdata(rtype: str, text: str, origin: dns.name.Name | None = None) -> dns.rdata.Rdata:
    """Zone-file data of one record (``10 mx.example.com.``) through dnspython; relative
    names are relative to ``origin`` (the root while checking a config without a zone).
    ValueError with dnspython's reason."""
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text,
                                   origin=origin or dns.name.root, relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


@dataclass
class Node:
    """One owner name: its static RRsets and its balanced record, if any."""

    name: dns.name.Name
    static: dict[int, dns.rrset.RRset] = field(default_factory=dict)
    balanced: DnsRecord | None = None

    def types(self) -> set[int]:
        out = set(self.static)
        if self.balanced is not None:
            out |= {dns.rdatatype.A, dns.rdatatype.AAAA}
        return out


@dataclass(frozen=True)
class Found:
    """What :meth:`Zone.find` learnt of a name: the node holding its data (the wildcard
    node for a synthesised name), or None with ``exists`` telling NODATA from NXDOMAIN."""

    node: Node | None
    exists: bool
    wildcard: bool = False


class Zone:
    """One zone, compiled."""

    def __init__(self, cfg: DnsZone) -> None:
        self.cfg = cfg
        self.origin = dns.name.from_text(cfg.name)
        self.ttl = int(cfg.ttl)
        self.degraded_ttl = int(cfg.degraded_ttl)
        soa = cfg.soa
        mname = soa.mname or f"ns1.{cfg.name}"
        rname = soa.rname or f"hostmaster.{cfg.name}"
        soa_text = (f"{mname} {rname} {soa.serial} {int(soa.refresh)} {int(soa.retry)} "
                    f"{int(soa.expire)} {int(soa.minimum)}")
        self.soa = self._rrset(self.origin, "SOA", [soa_text], self.ttl)
        # RFC 2308 section 5: negative answers are cached for min(SOA TTL, SOA minimum).
        self.negative_soa = self._rrset(self.origin, "SOA", [soa_text], min(self.ttl, int(soa.minimum)))
        self.nodes: dict[dns.name.Name, Node] = {}
        apex = self._node(self.origin)
        apex.static[dns.rdatatype.SOA] = self.soa
        if cfg.ns or not any(r.name == "@" and r.type == "NS" for r in cfg.records):
            apex.static[dns.rdatatype.NS] = self._rrset(self.origin, "NS", cfg.ns or [mname], self.ttl)
        for rec in cfg.records:
            owner = self.origin if rec.name == "@" else dns.name.from_text(rec.name, origin=self.origin)
            node = self._node(owner)
            if rec.type is None:
                node.balanced = rec
                continue
            ttl = self.ttl if rec.ttl is None else int(rec.ttl)
            rdtype = dns.rdatatype.from_text(rec.type)
            rrset = self._rrset(owner, rec.type, rec.values(), ttl)
            if rdtype in node.static:
                node.static[rdtype].union_update(rrset)  # type: ignore[no-untyped-call]
            else:
                node.static[rdtype] = rrset
        # Every ancestor of a configured name down to the apex exists (empty non-terminals).
        self.names: set[dns.name.Name] = set(self.nodes)
        for name in list(self.nodes):
            while name != self.origin and len(name) > len(self.origin):
                name = name.parent()
                self.names.add(name)

    def _node(self, name: dns.name.Name) -> Node:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = Node(name)
        return node

    def _rrset(self, owner: dns.name.Name, rtype: str, values: list[str], ttl: int) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
        for text in values:
            rrset.add(parse_rdata(rtype, text, self.origin))
        rrset.ttl = ttl
        return rrset

    def contains(self, qname: dns.name.Name) -> bool:
        return qname.is_subdomain(self.origin)

    def find(self, qname: dns.name.Name) -> Found:
        """The node answering ``qname`` (a name inside the zone)."""
        node = self.nodes.get(qname)
        if node is not None:
            return Found(node, True)
        if qname in self.names:
            return Found(None, True)  # empty non-terminal
        encloser = qname.parent()
        while encloser not in self.names and encloser != self.origin:
            encloser = encloser.parent()
        wild = self.nodes.get(WILD.concatenate(encloser))
        if wild is not None:
            return Found(wild, True, wildcard=True)
        return Found(None, False)

    def owner_names(self) -> list[dns.name.Name]:
        """Configured owner names without wildcards: the names worth precomputing."""
        return [n for n in self.nodes if not n.is_wild()]


class Zones:
    """All zones of a listener; a query goes to the zone with the longest matching apex."""

    def __init__(self, zones: list[DnsZone]) -> None:
        self.zones = sorted((Zone(z) for z in zones), key=lambda z: -len(z.origin))

    def zone_for(self, qname: dns.name.Name) -> Zone | None:
        for z in self.zones:
            if qname.is_subdomain(z.origin):
                return z
        return None

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones)

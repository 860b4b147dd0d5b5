"""Precomputed answers: the wire form of every response, built when health changes.

Theory of operation
-------------------
:class:`Answers` holds, for each (question name, type), an :class:`Entry`: per client
region (index 0 = no region; more only for names whose answer depends on the region)
a :class:`Variants` object holding finished DNS responses in wire form, with id 0,
the question name in lower case, without and with an EDNS(0) OPT record. The
responder copies one, puts in the query's id, flags and the question exactly as the
client spelled it (same length, so every compression pointer stays valid and the
answers' owner names, compressed to the question, follow its case), and sends it.

The table holds every configured name for A, AAAA and its static types and is rebuilt
by :meth:`Answers.rebuild`, which the responder calls (coalesced) after a health,
weight or site change. Any other question (wildcard-synthesised names, NXDOMAIN,
NODATA of other types, names outside the zones) is answered the same way but computed
on first use and kept in a bounded cache that the rebuild empties. dnspython builds
every message: pyvs writes no DNS wire format by hand except the header patch.

Rules implemented here (RFC 1034 4.3.2, RFC 2308, RFC 4592): AA on every answer from
a zone; NXDOMAIN when the name does not exist, NOERROR with no answer (NODATA) when
it exists without the type, both with the zone's SOA (negative TTL) in the authority
section; CNAME answers with the in-zone chain followed; REFUSED without AA for names
outside every zone; AXFR/IXFR refused.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pyvs.config.dns_schema import DnsOptions, DnsRecord, GslbSite
from pyvs.dns.policy import HealthView, LastGood, fixed, pool_choice, sites_choice
from pyvs.dns.stats import answer_slot
from pyvs.dns.zone import Zone, Zones

A, AAAA, CNAME, ANY = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.ANY
REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
MAX_CHAIN = 8  # CNAMEs followed inside the zones

Sections = tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]  # answer, authority


@dataclass
class Variants:
    """The responses one question may get (one per variant of the policy) and how one is
    picked per query. ``sections`` keeps the RRsets for responses built per query (ECS)."""

    rcode: int
    aa: bool
    wires: list[tuple[bytes, bytes]]  # (without EDNS, with EDNS) per variant
    sections: list[Sections]
    mode: str = "fixed"
    cum: list[float] | None = None
    counter: int = 0
    regional: bool = False
    stat: int = 0  # the responder's counter slot of this answer (rcode, qtype): pyvs/dns/stats.py

    def pick(self, rng: random.Random) -> int:
        n = len(self.wires)
        if n == 1:
            return 0
        if self.mode == "weighted" and self.cum is not None:
            return min(bisect.bisect_right(self.cum, rng.random() * self.cum[-1]), n - 1)
        i = self.counter
        self.counter = (i + 1) % n
        return i


@dataclass
class Entry:
    """All regions' variants of one question; ``per_region`` has one item unless regional."""

    per_region: list[Variants]

    def for_region(self, region: int) -> Variants:
        per = self.per_region
        return per[region] if region < len(per) else per[0]


@dataclass
class Partial:
    """A question's answer before it becomes wire: variants of sections, pick mode."""

    rcode: int
    aa: bool
    sections: list[Sections]
    mode: str = "fixed"
    weights: tuple[int, ...] = ()
    regional: bool = False


class Answers:
    """The answer table of one dns listener in one worker."""

    def __init__(self, zones: Zones, options: DnsOptions, view: HealthView) -> None:
        self.zones = zones
        self.options = options
        self.view = view
        self.sites = {s.name: s for s in options.sites}
        self.regions: list[str | None] = [None, *sorted(set(options.regions.values()))]
        self.last_good = LastGood()
        self.record_ids: dict[int, int] = {}
        self.table: dict[tuple[bytes, int], Entry] = {}
        self.cache: dict[tuple[bytes, int], Entry] = {}
        self.cache_size = options.cache_size
        self.payload = options.udp_payload
        self.rebuilds = 0
        self._seed_last_good()
        self.rebuild()

    # ------------------------------------------------------------ building
    def _seed_last_good(self) -> None:
        """Before any health message every server counts as good (as in the workers)."""
        for zone in self.zones:
            for rec in zone.cfg.records:
                if rec.pool is None:
                    continue
                for family in (4, 6):
                    addrs = tuple(s.ip for s in self.view.servers(rec.pool) if s.family == family and not s.backup)
                    for r in range(len(self.regions)):
                        self.last_good.remember((id(rec), family, r), addrs)

    def rebuild(self) -> None:
        """Recompute every precomputed answer from the current health; empty the cache."""
        table: dict[tuple[bytes, int], Entry] = {}
        for zone in self.zones:
            for name in zone.owner_names():
                node = zone.nodes[name]
                qname = name.canonicalize()
                types = {A, AAAA, CNAME, ANY, *node.static}
                for qtype in types:
                    table[(qname.to_wire() or b"", qtype)] = self.build(qname, qtype)
        self.table = table
        self.cache = {}
        self.rebuilds += 1

    def lookup(self, qwire: bytes, qtype: int) -> Entry:
        """The entry of a question (``qwire``: the name in wire form, lower case)."""
        key = (qwire, qtype)
        entry = self.table.get(key) or self.cache.get(key)
        if entry is None:
            entry = self.build(dns.name.from_wire(qwire, 0)[0], qtype)
            if len(self.cache) >= self.cache_size:
                self.cache.clear()  # a flood of random names must not grow memory
            if self.cache_size:
                self.cache[key] = entry
        return entry

    def build(self, qname: dns.name.Name, qtype: int) -> Entry:
        regional = self.partial(qname, qtype, 0).regional
        count = len(self.regions) if regional else 1
        per = [self._variants(qname, qtype, self.partial(qname, qtype, r)) for r in range(count)]
        return Entry(per)

    def _variants(self, qname: dns.name.Name, qtype: int, p: Partial) -> Variants:
        wires = []
        for answer, authority in p.sections:
            msg = dns.message.Message(id=0)
            msg.flags = dns.flags.QR | (dns.flags.AA if p.aa else 0)
            msg.set_rcode(dns.rcode.Rcode(p.rcode))
            msg.question.append(dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.RdataType(qtype)))
            msg.answer.extend(answer)
            msg.authority.extend(authority)
            plain = msg.to_wire(want_shuffle=False)
            msg.use_edns(0, payload=self.payload)
            wires.append((plain, msg.to_wire(want_shuffle=False)))
        cum = None
        if p.mode == "weighted":
            total, cum = 0.0, []
            for w in p.weights:
                total += w
                cum.append(total)
        return Variants(p.rcode, p.aa, wires, p.sections, p.mode, cum, regional=p.regional,
                        stat=answer_slot(p.rcode, qtype))

    # ------------------------------------------------------------ resolution
    def partial(self, qname: dns.name.Name, qtype: int, region: int, depth: int = 0) -> Partial:
        """The answer to (qname, qtype) for a client of ``region`` (an index)."""
        zone = self.zones.zone_for(qname)
        if zone is None or qtype in REFUSED_TYPES:
            return Partial(dns.rcode.REFUSED, False, [([], [])])
        found = zone.find(qname)
        if not found.exists:
            return Partial(dns.rcode.NXDOMAIN, True, [([], [zone.negative_soa])])
        node = found.node
        nodata = Partial(dns.rcode.NOERROR, True, [([], [zone.negative_soa])])
        if node is None:
            return nodata
        cname = node.static.get(CNAME)
        if cname is not None and qtype not in (CNAME, ANY):
            own = _owned(cname, qname)
            target = next(iter(cname)).target
            if depth < MAX_CHAIN and self.zones.zone_for(target) is not None:
                tail = self.partial(target, qtype, region, depth + 1)
                if tail.rcode == dns.rcode.NOERROR:
                    sections = [([own, *ans], auth if not ans else []) for ans, auth in tail.sections]
                    return Partial(dns.rcode.NOERROR, True, sections, tail.mode, tail.weights, tail.regional)
                return Partial(tail.rcode, True, [([own], auth) for _, auth in tail.sections], regional=tail.regional)
            return Partial(dns.rcode.NOERROR, True, [([own], [])])
        if qtype in (A, AAAA) and node.balanced is not None:
            return self._balanced(zone, node.balanced, qname, 4 if qtype == A else 6, region, nodata)
        if qtype == ANY:
            rrsets = [_owned(r, qname) for r in node.static.values()]
            if node.balanced is not None:
                for family in (4, 6):
                    b = self._balanced(zone, node.balanced, qname, family, region, nodata)
                    rrsets.extend(b.sections[0][0])
            return Partial(dns.rcode.NOERROR, True, [(rrsets, [])]) if rrsets else nodata
        rrset = node.static.get(qtype)
        if rrset is None:
            return nodata
        return Partial(dns.rcode.NOERROR, True, [([_owned(rrset, qname)], [])])

    def _balanced(self, zone: Zone, rec: DnsRecord, qname: dns.name.Name, family: int, region: int,
                  nodata: Partial) -> Partial:
        rdtype = A if family == 4 else AAAA
        region_name = self.regions[region] if region < len(self.regions) else None
        key = (id(rec), family, region)
        regional = rec.sites is not None or rec.policy == "subnet"
        if rec.sites is not None:
            sites: list[GslbSite] = [self.sites[s] for s in rec.sites]
            choice, ok = sites_choice(sites, self.view, family, region_name)
            if ok:
                self.last_good.remember(key, choice.variants[0])
            else:
                choice = fixed(self.last_good.get(key), True)
        else:
            assert rec.pool is not None
            servers = [s for s in self.view.servers(rec.pool) if s.family == family]
            choice, used = pool_choice(rec, servers, region_name)
            if used:
                self.last_good.remember(key, tuple(s.ip for s in used))
            elif servers:
                fb: tuple[str, ...] = ()
                if rec.all_down == "fallback" and rec.fallback is not None:
                    fbs = [s for s in self.view.servers(rec.fallback) if s.family == family]
                    fb = tuple(s.ip for s in fbs if s.eligible and s.weight > 0)
                choice = fixed(fb or self.last_good.get(key), True)
        if not choice.variants[0]:
            return Partial(nodata.rcode, True, nodata.sections, regional=regional)
        ttl = zone.ttl if rec.ttl is None else int(rec.ttl)
        if choice.degraded:
            short = zone.degraded_ttl if rec.degraded_ttl is None else int(rec.degraded_ttl)
            ttl = min(ttl, short)
        sections: list[Sections] = []
        for addrs in choice.variants:
            rrset = dns.rrset.from_text_list(qname, ttl, dns.rdataclass.IN, rdtype, list(addrs))
            sections.append(([rrset], []))
        return Partial(dns.rcode.NOERROR, True, sections, choice.mode, choice.weights, regional)


def _owned(rrset: dns.rrset.RRset, qname: dns.name.Name) -> dns.rrset.RRset:
    """``rrset`` with the question's name as owner (wildcard synthesis; case of the question)."""
    if rrset.name == qname and rrset.name.labels == qname.labels:
        return rrset
    out = dns.rrset.RRset(qname, rrset.rdclass, rdtype=rrset.rdtype)
    out.update(rrset)  # type: ignore[no-untyped-call]
    out.ttl = rrset.ttl
    return out


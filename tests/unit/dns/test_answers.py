"""Answers without sockets: policies, negative answers, wildcards, the wire patch,
regions and GSLB site choice, driven through a fake health picture."""

from __future__ import annotations

import collections
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pyvs.config.dns_schema import GslbSite
from pyvs.config.schema import Config
from pyvs.dns.gslb import SiteState, count_up
from pyvs.dns.policy import ServerView, site_is_up
from pyvs.dns.regions import RegionMap
from pyvs.dns.responder import DnsService
from pyvs.dns.wire import scan


class FakeView:
    """A health picture the test sets by hand."""

    def __init__(self, pools: dict[str, list[tuple[str, str, int]]]) -> None:
        self.state: dict[str, list[ServerView]] = {}
        for pool, servers in pools.items():
            self.state[pool] = [ServerView(n, ip, 6 if ":" in ip else 4, w, True, n.startswith("bk"))
                                for n, ip, w in servers]
        self.down_sites: set[str] = set()

    def servers(self, pool: str) -> list[ServerView]:
        return self.state[pool]

    def set(self, pool: str, name: str, *, eligible: bool | None = None, weight: int | None = None) -> None:
        self.state[pool] = [ServerView(s.name, s.ip, s.family, s.weight if weight is None else weight,
                                       s.eligible if eligible is None else eligible, s.backup)
                            if s.name == name else s for s in self.state[pool]]

    def site_up(self, site: GslbSite) -> bool:
        return site.name not in self.down_sites and site_is_up(site, self)


POOLS = {
    "web": [("w1", "192.0.2.1", 3), ("w2", "192.0.2.2", 1), ("w6", "2001:db8::1", 1), ("bk1", "192.0.2.9", 1)],
    "fb": [("f1", "198.51.100.1", 1)],
    "eu": [("e1", "10.1.0.1", 1)],
    "us": [("u1", "10.2.0.1", 1)],
}


def build(records: list[dict[str, Any]], dns_opts: dict[str, Any] | None = None) -> tuple[DnsService, FakeView]:
    backends = [{"name": p, "servers": [{"name": n, "address": f"[{ip}]:80" if ":" in ip else f"{ip}:80",
                                         "weight": w, "backup": n.startswith("bk")} for n, ip, w in s]}
                for p, s in POOLS.items()]
    c = Config.model_validate({"listeners": [{"name": "d", "mode": "dns", "bind": ["127.0.0.1:53"],
                                              "dns": dns_opts or {},
                                              "zones": [{"name": "example.com", "records": records}]}],
                               "backends": backends})
    view = FakeView(POOLS)
    svc = DnsService(c.listeners[0], {}, seed=1, view=view)
    return svc, view


def ask(svc: DnsService, name: str, rdtype: str = "A", source: str = "127.0.0.1", tcp: bool = False,
        **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    out = svc.answer(q.to_wire(), source, tcp)
    assert out is not None
    r = dns.message.from_wire(out)
    assert r.id == q.id
    return r


def ips(r: dns.message.Message) -> list[str]:
    return [rd.address for rrset in r.answer if rrset.rdtype in (1, 28) for rd in rrset]


def test_all_rotates_and_splits_families() -> None:
    svc, _ = build([{"name": "www", "pool": "web"}])
    firsts = collections.Counter(ips(ask(svc, "www.example.com"))[0] for _ in range(10))
    assert firsts == {"192.0.2.1": 5, "192.0.2.2": 5}
    assert ips(ask(svc, "www.example.com", "AAAA")) == ["2001:db8::1"]


def test_failed_server_leaves_after_rebuild_and_backup_last() -> None:
    svc, view = build([{"name": "www", "pool": "web", "degraded_ttl": "3s"}])
    view.set("web", "w1", eligible=False)
    svc.changed()  # no loop: rebuilds at once
    r = ask(svc, "www.example.com")
    assert ips(r) == ["192.0.2.2"] and r.answer[0].ttl == 3
    view.set("web", "w2", eligible=False)
    svc.changed()
    assert ips(ask(svc, "www.example.com")) == ["192.0.2.9"]  # the backup


def test_all_down_last_good_and_fallback() -> None:
    svc, view = build([{"name": "www", "pool": "eu"},
                       {"name": "fb", "pool": "eu", "all_down": "fallback", "fallback": "fb"}])
    view.set("eu", "e1", eligible=False)
    svc.changed()
    assert ips(ask(svc, "www.example.com")) == ["10.1.0.1"]  # last good: never empty
    assert ips(ask(svc, "fb.example.com")) == ["198.51.100.1"]


def test_best_failover_weighted() -> None:
    svc, view = build([{"name": "best", "pool": "web", "policy": "best"},
                       {"name": "fo", "pool": "web", "policy": "failover", "count": 2},
                       {"name": "wr", "pool": "web", "policy": "weighted"}])
    assert {ips(ask(svc, "best.example.com"))[0] for _ in range(4)} == {"192.0.2.1"}
    assert ips(ask(svc, "fo.example.com")) == ["192.0.2.1", "192.0.2.2"]
    counts = collections.Counter(ips(ask(svc, "wr.example.com"))[0] for _ in range(2000))
    assert 0.70 < counts["192.0.2.1"] / 2000 < 0.80
    view.set("web", "w2", weight=3)
    svc.changed()
    counts = collections.Counter(ips(ask(svc, "wr.example.com"))[0] for _ in range(2000))
    assert 0.45 < counts["192.0.2.1"] / 2000 < 0.55


def test_negative_answers() -> None:
    svc, _ = build([{"name": "www", "pool": "web"}, {"name": "a.b", "type": "TXT", "value": "x"}])
    nx = ask(svc, "nope.example.com")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].ttl == 30
    nodata = ask(svc, "www.example.com", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    ent = ask(svc, "b.example.com", "A")
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    refused = ask(svc, "www.example.org")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    assert ask(svc, "example.com", "AXFR", tcp=True).rcode() == dns.rcode.REFUSED
    ns = ask(svc, "example.com", "NS")
    assert ns.answer[0][0].target.to_text() == "ns1.example.com."


def test_wildcard_synthesis_keeps_the_name_and_case() -> None:
    svc, _ = build([{"name": "*.apps", "type": "TXT", "value": "wild"}, {"name": "x.apps", "type": "TXT",
                                                                        "value": "own"}])
    r = ask(svc, "Foo.Bar.APPS.example.com", "TXT")
    assert r.answer[0].name.to_text() == "Foo.Bar.APPS.example.com." and r.answer[0][0].strings == (b"wild",)
    assert ask(svc, "x.apps.example.com", "TXT").answer[0][0].strings == (b"own",)
    assert ask(svc, "x.apps.example.com", "A").rcode() == dns.rcode.NOERROR  # exists: NODATA, not wildcard


def test_cname_chain_in_zone() -> None:
    svc, _ = build([{"name": "www", "pool": "eu"}, {"name": "alias", "type": "CNAME", "value": "www"},
                    {"name": "out", "type": "CNAME", "value": "elsewhere.example.net."}])
    r = ask(svc, "alias.example.com")
    assert r.answer[0].rdtype == dns.rdatatype.CNAME and ips(r) == ["10.1.0.1"]
    r = ask(svc, "out.example.com")
    assert [x.rdtype for x in r.answer] == [dns.rdatatype.CNAME]


def test_truncation_and_edns() -> None:
    many = [{"name": f"s{i}", "type": "A", "value": f"192.0.2.{i}"} for i in range(1, 2)]
    svc, _ = build([*many, {"name": "big", "type": "TXT", "value": [f'"{"x" * 200}{i}"' for i in range(4)]}])
    plain = ask(svc, "big.example.com", "TXT")
    assert plain.flags & dns.flags.TC and not plain.answer
    edns = ask(svc, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 4 and edns.payload == 1232
    small = ask(svc, "big.example.com", "TXT", use_edns=0, payload=512)
    assert small.flags & dns.flags.TC and small.edns == 0
    assert len(ask(svc, "big.example.com", "TXT", tcp=True).answer[0]) == 4


def test_rd_copied_and_scan_refuses_the_unusual() -> None:
    svc, _ = build([{"name": "www", "pool": "eu"}])
    q = dns.message.make_query("www.example.com", "A")
    q.flags &= ~dns.flags.RD
    out = svc.answer(q.to_wire(), "127.0.0.1", False)
    assert out is not None and not dns.message.from_wire(out).flags & dns.flags.RD
    assert scan(q.to_wire()) is not None
    q2 = dns.message.make_query("www.example.com", "A", use_edns=0, options=[dns.edns.ECSOption("10.0.0.0", 8)])
    assert scan(q2.to_wire()) is None
    q3 = dns.message.make_query("www.example.com", "A", use_edns=1)
    assert scan(q3.to_wire()) is None
    r = dns.message.from_wire(svc.answer(q3.to_wire(), "127.0.0.1", False) or b"")
    assert r.rcode() == dns.rcode.BADVERS
    assert svc.answer(b"\x00\x01\x81\x80" + b"\x00" * 8, "127.0.0.1", False) is None  # a response: silence
    assert svc.answer(b"\x00", "127.0.0.1", False) is None


def test_region_by_ecs_then_source_and_site_failover() -> None:
    opts = {"regions": {"10.1.0.0/16": "eu", "10.2.0.0/16": "us", "10.1.9.0/24": "us"},
            "sites": [{"name": "eu", "region": "eu", "pool": "eu"}, {"name": "us", "region": "us", "pool": "us"},
                      {"name": "static", "addresses": ["203.0.113.1"]}]}
    svc, view = build([{"name": "geo", "sites": ["eu", "us"]}, {"name": "far", "sites": ["static"]}], opts)
    assert ips(ask(svc, "geo.example.com", source="10.2.3.4")) == ["10.2.0.1"]
    assert ips(ask(svc, "geo.example.com", source="10.1.3.4")) == ["10.1.0.1"]
    assert ips(ask(svc, "geo.example.com", source="10.1.9.4")) == ["10.2.0.1"]  # longest prefix
    assert ips(ask(svc, "geo.example.com", source="192.0.2.1")) == ["10.1.0.1"]  # no region: list order
    r = ask(svc, "geo.example.com", source="10.2.3.4", use_edns=0, options=[dns.edns.ECSOption("10.1.7.0", 24)])
    assert ips(r) == ["10.1.0.1"]
    assert [o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption)] == [24]
    view.set("eu", "e1", eligible=False)
    svc.changed()
    r = ask(svc, "geo.example.com", source="10.1.3.4")
    assert ips(r) == ["10.2.0.1"] and r.answer[0].ttl == 5  # next site, short TTL
    view.set("us", "u1", eligible=False)
    svc.changed()
    assert ips(ask(svc, "geo.example.com", source="10.1.3.4")) == ["10.2.0.1"]  # last good
    assert ips(ask(svc, "far.example.com")) == ["203.0.113.1"]


def test_subnet_policy() -> None:
    opts = {"regions": {"10.1.0.0/16": "eu", "10.2.0.0/16": "us"}}
    svc, view = build([{"name": "near", "pool": "web", "policy": "subnet", "regions": {"eu": ["w1"], "us": ["w2"]}}],
                      opts)
    assert ips(ask(svc, "near.example.com", source="10.1.0.5")) == ["192.0.2.1"]
    assert ips(ask(svc, "near.example.com", source="10.2.0.5")) == ["192.0.2.2"]
    assert sorted(ips(ask(svc, "near.example.com", source="192.0.2.77"))) == ["192.0.2.1", "192.0.2.2"]
    view.set("web", "w1", eligible=False)
    svc.changed()
    assert ips(ask(svc, "near.example.com", source="10.1.0.5")) == ["192.0.2.2"]


def test_remote_site_state() -> None:
    site = GslbSite(name="b", status_url="http://10.0.0.2:9090/status", backend="web", addresses=["10.0.0.2"],
                    fall=2, min_up=2)
    st = SiteState(site)
    status = {"backends": [{"name": "web", "servers": [{"state": "UP"}, {"state": "UP"}, {"state": "DOWN"}]}]}
    assert count_up(status, "web") == 2 and count_up(status, "x") == 0 and count_up([], "web") == 0
    assert not st.feed(2) and st.up
    assert not st.feed(1) and st.up  # one bad poll: not yet
    assert st.feed(None, "timeout") and not st.up
    assert st.feed(2) and st.up


@pytest.mark.parametrize("address,expected", [("10.1.2.3", 1), ("::ffff:10.1.2.3", 1), ("2001:db8::5", 2),
                                              ("192.0.2.1", 0), ("bogus", 0)])
def test_region_map(address: str, expected: int) -> None:
    rm = RegionMap({"10.1.0.0/16": "a", "2001:db8::/32": "b"}, [None, "a", "b"])
    assert rm.region_of(address) == expected
    assert rm.region_of(address) == expected  # memoised

"""Source address ACLs: deny wins, allow lists, IPv6, mapped addresses, the cache bound."""

from __future__ import annotations

import pytest

from pyvs.l7.filters.acl import SourceAcl, parse_address
from pyvs.l7.filters.base import Verdict
from tests.unit.filters.fake import FakeExchange


def _verdict(f: SourceAcl, ip: bytes) -> Verdict:
    ex = FakeExchange(client_ip=ip)
    v = f.on_request(ex)
    assert (ex.reply is not None) == (v is Verdict.RESPOND)
    return v


def test_allow_list() -> None:
    f = SourceAcl(allow=["10.0.0.0/8", "192.168.1.7"])
    assert _verdict(f, b"10.1.2.3") is Verdict.CONTINUE
    assert _verdict(f, b"192.168.1.7") is Verdict.CONTINUE
    assert _verdict(f, b"192.168.1.8") is Verdict.RESPOND
    assert _verdict(f, b"11.0.0.0") is Verdict.RESPOND
    assert _verdict(f, b"::1") is Verdict.RESPOND  # an IPv4-only allow list refuses IPv6


def test_deny_list_alone_allows_the_rest() -> None:
    f = SourceAcl(deny=["203.0.113.0/24"])
    assert _verdict(f, b"203.0.113.9") is Verdict.RESPOND
    assert _verdict(f, b"203.0.114.1") is Verdict.CONTINUE
    assert _verdict(f, b"2001:db8::1") is Verdict.CONTINUE


def test_deny_wins_over_allow() -> None:
    f = SourceAcl(allow=["10.0.0.0/8"], deny=["10.0.0.5", "10.9.0.0/16"])
    assert _verdict(f, b"10.0.0.4") is Verdict.CONTINUE
    assert _verdict(f, b"10.0.0.5") is Verdict.RESPOND
    assert _verdict(f, b"10.9.200.1") is Verdict.RESPOND
    assert _verdict(f, b"10.10.0.1") is Verdict.CONTINUE


def test_ipv6() -> None:
    f = SourceAcl(allow=["2001:db8::/32", "::1"], deny=["2001:db8:bad::/48"])
    assert _verdict(f, b"::1") is Verdict.CONTINUE
    assert _verdict(f, b"2001:db8:1::5") is Verdict.CONTINUE
    assert _verdict(f, b"2001:DB8::1") is Verdict.CONTINUE
    assert _verdict(f, b"2001:db8:bad::1") is Verdict.RESPOND
    assert _verdict(f, b"2001:db9::1") is Verdict.RESPOND
    assert _verdict(f, b"127.0.0.1") is Verdict.RESPOND
    assert _verdict(f, b"fe80::1%eth0") is Verdict.RESPOND


def test_ipv4_mapped_addresses_and_networks_are_ipv4() -> None:
    f = SourceAcl(allow=["127.0.0.0/8"])
    assert _verdict(f, b"::ffff:127.0.0.1") is Verdict.CONTINUE
    assert _verdict(f, b"::ffff:10.0.0.1") is Verdict.RESPOND
    g = SourceAcl(deny=["::ffff:10.0.0.0/104"])
    assert _verdict(g, b"10.1.1.1") is Verdict.RESPOND
    assert _verdict(g, b"11.1.1.1") is Verdict.CONTINUE


def test_all_and_overlapping_networks() -> None:
    f = SourceAcl(allow=["10.0.0.0/24", "10.0.0.0/16", "10.0.1.0/24", "10.2.0.0/16"], deny=["all"])
    assert _verdict(f, b"10.0.3.3") is Verdict.RESPOND  # deny all wins
    g = SourceAcl(allow=["10.0.0.0/24", "10.0.0.0/16", "10.0.1.0/24", "10.2.0.0/16"])
    assert g._allow.v4 == ((0x0A000000, 0x0A020000), (0x0A00FFFF, 0x0A02FFFF))
    assert _verdict(g, b"10.0.255.255") is Verdict.CONTINUE
    assert _verdict(g, b"10.1.0.0") is Verdict.RESPOND
    assert _verdict(g, b"10.2.0.0") is Verdict.CONTINUE


def test_unparsable_addresses_match_nothing() -> None:
    assert _verdict(SourceAcl(allow=["0.0.0.0/0"]), b"") is Verdict.RESPOND
    assert _verdict(SourceAcl(allow=["0.0.0.0/0"]), b"unix:/run/x") is Verdict.RESPOND
    assert _verdict(SourceAcl(deny=["0.0.0.0/0", "::/0"]), b"not-an-ip") is Verdict.CONTINUE
    assert parse_address(b"1.2.3") is None and parse_address(b"\xff") is None


def test_reply_is_built_once_and_not_cacheable() -> None:
    f = SourceAcl(deny=["127.0.0.1"], status=404)
    a, b = FakeExchange(client_ip=b"127.0.0.1"), FakeExchange(client_ip=b"127.0.0.1")
    f.on_request(a)
    f.on_request(b)
    assert a.reply is b.reply and a.reply is not None
    data = a.reply.encode(close=False)
    assert data.startswith(b"HTTP/1.1 404 ")
    assert b"\r\nCache-Control: no-store\r\n" in data and data.endswith(b"\r\n\r\npyvs: access denied.\n")


def test_cache_is_used_and_bounded() -> None:
    class Small(SourceAcl):
        __slots__ = ()
        CACHE_SIZE = 4

    f = Small(allow=["10.0.0.0/8"])
    for i in range(10):
        _verdict(f, b"10.0.0.%d" % i)
        assert len(f._cache) <= 4
    f._cache[b"10.0.0.9"] = False  # a cached decision is what answers
    assert _verdict(f, b"10.0.0.9") is Verdict.RESPOND


@pytest.mark.parametrize("kw", [
    {},
    {"allow": ["10.0.0.1/8"]},  # host bits set
    {"allow": ["10.0.0.0/33"]},
    {"deny": ["example.com"]},
    {"allow": ["10.0.0.0/8"], "status": 200},
    {"allow": "10.0.0.0/8"},
])
def test_bad_configurations_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        SourceAcl(**kw)  # type: ignore[arg-type]


def test_describe() -> None:
    f = SourceAcl(allow=["10.0.0.0/8"], deny=["10.0.0.5"])
    assert f.describe() == "source ACL: allow 10.0.0.0/8; deny 10.0.0.5 (deny wins; else 403)"

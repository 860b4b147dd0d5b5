"""The per-query shortcut against dnspython: what scan() takes it reads as dnspython
does, and no byte string makes the responder raise."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.dns.responder import DnsService
from pyvs.dns.wire import scan
from tests.unit.dns.test_answers import build

LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
NAMES = st.lists(LABEL, min_size=1, max_size=5).map(lambda labels: ".".join(labels) + ".")
TYPES = st.sampled_from(["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "ANY", "SRV"])

_SVC: DnsService = build([{"name": "www", "pool": "web"}, {"name": "*.w", "type": "TXT", "value": "x"}],
                         {"regions": {"10.0.0.0/8": "eu"},
                          "sites": [{"name": "eu", "region": "eu", "pool": "eu"}]})[0]


@settings(max_examples=150, deadline=None)
@given(NAMES, TYPES, st.sampled_from([-1, 0]), st.integers(0, 65535))
def test_scan_agrees_with_dnspython(name: str, rdtype: str, edns: int, qid: int) -> None:
    q = dns.message.make_query(name, rdtype, use_edns=edns, payload=1232)
    q.id = qid
    wire = q.to_wire()
    got = scan(wire)
    assert got is not None
    qname, qtype, has_edns, payload, end = got
    assert dns.name.from_wire(qname, 0)[0] == dns.name.from_text(name)
    assert qtype == dns.rdatatype.from_text(rdtype)
    assert has_edns == (edns == 0) and end == 12 + len(qname) + 4
    assert payload == (1232 if edns == 0 else 512)
    out = _SVC.answer(wire, "10.1.2.3", False)
    assert out is not None
    r = dns.message.from_wire(out)
    assert r.id == qid and r.question[0].name.to_text() == name  # case and id as asked


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_never_raise(data: bytes) -> None:
    for tcp in (False, True):
        out = _SVC.answer(data, "192.0.2.1", tcp)
        if out is not None:
            assert len(out) >= 12 and out[:2] == data[:2] and out[2] & 0x80  # a response to this id


@settings(max_examples=100, deadline=None)
@given(NAMES, TYPES, st.binary(min_size=1, max_size=20))
def test_mutated_queries_never_raise(name: str, rdtype: str, junk: bytes) -> None:
    wire = bytearray(dns.message.make_query(name, rdtype, use_edns=0).to_wire())
    for i, b in enumerate(junk):
        wire[(i * 7 + b) % len(wire)] = b
    _SVC.answer(bytes(wire), "192.0.2.1", False)

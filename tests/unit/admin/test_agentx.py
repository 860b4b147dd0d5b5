"""The AgentX codec and lookups (RFC 2741), and PYVS-MIB against what the subagent serves."""

from __future__ import annotations

import re
import struct
from importlib.resources import files

import pytest

from pyvs.admin.agentx import (
    NETWORK_BYTE_ORDER,
    AgentXError,
    MibView,
    PduType,
    Request,
    VarType,
    decode_oid,
    encode_oid,
    encode_value,
    parse_header,
    parse_request,
    pdu,
    response_pdu,
)
from pyvs.admin.snmp import ROOT, objects, parse_agentx_address

STATUS = {
    "version": "0.1.0", "uptime": 12.5, "reloads": 1,
    "workers": [{"ready": True}, {"ready": False}],
    "totals": {"requests": 42, "responses_5xx": 2, "client_connections": 7},
    "backends": [
        {"name": "app", "balance": "roundrobin", "no_server": 0, "servers": [
            {"name": "a", "address": "127.0.0.1:1", "state": "UP", "weight": 1, "requests": 40, "active": 1,
             "health": {"last_check": {"ok": True, "duration_ms": 1.6}}},
            {"name": "b", "address": "127.0.0.1:2", "state": "DRAIN", "weight": 2, "requests": 2}]},
    ],
    "vrrp": [{"name": "VI_1", "state": "MASTER", "priority": 150, "vrid": 51}],
}


def test_oid_compression_round_trip() -> None:
    oid = (*ROOT, 3, 1, 2, 1, 1)
    data = encode_oid(oid, include=True)
    assert data[1] == 4  # prefix: 1.3.6.1.4
    assert decode_oid(data, 0, "!") == (oid, True, len(data))
    other = (1, 0, 8802)
    assert decode_oid(encode_oid(other), 0, "!")[0] == other
    assert encode_oid(()) == b"\0\0\0\0"


def test_values_are_aligned() -> None:
    assert encode_value(VarType.OCTET_STRING, "abcde") == struct.pack("!I", 5) + b"abcde\0\0\0"
    assert encode_value(VarType.COUNTER64, 2**64 + 5) == struct.pack("!Q", 5)
    assert encode_value(VarType.INTEGER, -3) == struct.pack("!i", -3)
    assert encode_value(VarType.END_OF_MIB_VIEW, None) == b""


def test_little_endian_requests_are_read() -> None:
    start, end = (*ROOT, 1), (*ROOT, 2)

    def le_oid(oid: tuple[int, ...]) -> bytes:
        return struct.pack("<BBBB", len(oid) - 5, 4, 0, 0) + struct.pack(f"<{len(oid) - 5}I", *oid[5:])

    payload = le_oid(start) + le_oid(end)
    head = struct.pack("<BBBBIIII", 1, PduType.GETNEXT, 0, 0, 9, 8, 7, len(payload))
    h = parse_header(head)
    assert (h.session, h.transaction, h.packet) == (9, 8, 7)
    assert parse_request(h, payload).ranges == [(start, False, end)]


def test_bad_headers() -> None:
    with pytest.raises(AgentXError):
        parse_header(b"\x02" + b"\0" * 19)
    with pytest.raises(AgentXError):
        parse_header(b"\x01")


def test_getnext_getbulk_and_get() -> None:
    view = MibView(objects(STATUS))
    walk = []
    oid: tuple[int, ...] = ROOT
    while True:
        nxt, vtype, _ = view.next(oid, False, (*ROOT[:-1], ROOT[-1] + 1))
        if vtype is VarType.END_OF_MIB_VIEW:
            break
        walk.append(nxt)
        oid = nxt
    assert walk == sorted(walk) and len(walk) == len(view.oids)
    h = parse_header(pdu(PduType.GETBULK, b""))
    bulk = view.answer(Request(h, [(ROOT, False, ())], 0, 5))
    assert [o for o, _, _ in bulk] == walk[:5]
    h = parse_header(pdu(PduType.GET, b""))
    got = view.answer(Request(h, [((*ROOT, 1, 7, 0), False, ()), ((*ROOT, 9), False, ())]))
    assert got[0][1:] == (VarType.COUNTER64, 42) and got[1][1] is VarType.NO_SUCH_OBJECT


def test_response_pdu_header() -> None:
    h = parse_header(pdu(PduType.GET, b"", session=3, transaction=4, packet=5))
    out = response_pdu(h, [((*ROOT, 1, 1, 0), VarType.INTEGER, 1)])
    rh = parse_header(out)
    assert rh.type == PduType.RESPONSE and rh.flags & NETWORK_BYTE_ORDER
    assert (rh.session, rh.transaction, rh.packet) == (3, 4, 5) and rh.length == len(out) - 20


def test_objects_map_status() -> None:
    objs = objects(STATUS)
    assert objs[(*ROOT, 1, 1, 0)] == (VarType.INTEGER, 1)
    assert objs[(*ROOT, 1, 3, 0)] == (VarType.TIMETICKS, 1250)
    assert objs[(*ROOT, 1, 4, 0)] == (VarType.GAUGE32, 1)
    assert objs[(*ROOT, 3, 1, 4, 1, 2)] == (VarType.INTEGER, 3)  # b: drain
    assert objs[(*ROOT, 3, 1, 12, 1, 1)] == (VarType.INTEGER, 1)  # a: last check ok
    assert objs[(*ROOT, 3, 1, 12, 1, 2)] == (VarType.INTEGER, 3)  # b: not checked
    assert objs[(*ROOT, 4, 1, 3, 1)] == (VarType.INTEGER, 3)  # master
    assert objects(None) == {(*ROOT, 1, 1, 0): (VarType.INTEGER, 2)}


def test_agentx_addresses() -> None:
    assert parse_agentx_address("unix:/var/agentx/master") == ("unix", "/var/agentx/master")
    assert parse_agentx_address("/x") == ("unix", "/x")
    assert parse_agentx_address("tcp:127.0.0.1:705") == ("tcp", ("127.0.0.1", 705))
    with pytest.raises(ValueError):
        parse_agentx_address("nonsense")


SYNTAX_TYPES = {"Counter64": VarType.COUNTER64, "Counter32": VarType.COUNTER32, "Gauge32": VarType.GAUGE32,
                "TimeTicks": VarType.TIMETICKS, "DisplayString": VarType.OCTET_STRING, "INTEGER": VarType.INTEGER}


def mib() -> dict[tuple[int, ...], str]:
    """OID -> first word of SYNTAX of every read-only object of PYVS-MIB.txt."""
    text = files("pyvs.admin").joinpath("mibs/PYVS-MIB.txt").read_text()
    assert text.startswith("PYVS-MIB DEFINITIONS ::= BEGIN") and text.rstrip().endswith("END")
    where: dict[str, tuple[int, ...]] = {"pyvs": ROOT}
    syntax: dict[str, tuple[str, str]] = {}
    for m in re.finditer(r"^(\w+) (?:OBJECT-TYPE|OBJECT IDENTIFIER)(.*?)::= \{ (\w+) (\d+) \}", text, re.S | re.M):
        name, body, parent, sub = m.groups()
        where[name] = (*where[parent], int(sub))
        s = re.search(r"SYNTAX\s+(\w+)", body)
        a = re.search(r"MAX-ACCESS\s+([\w-]+)", body)
        if s and a:
            syntax[name] = (s.group(1), a.group(1))
    return {where[n]: s for n, (s, a) in syntax.items() if a == "read-only"}


def test_every_served_object_is_in_the_mib_with_its_type() -> None:
    defined = mib()
    for oid, (vtype, _) in objects(STATUS).items():
        column = oid[:-2] if oid[len(ROOT)] == 3 else oid[:-1]  # server rows have two indexes
        assert column in defined, oid
        assert SYNTAX_TYPES[defined[column]] is vtype, (oid, defined[column], vtype)


def test_every_object_of_the_mib_is_served() -> None:
    served = {oid[:-2] if oid[len(ROOT)] == 3 else oid[:-1] for oid in objects(STATUS)}
    assert set(mib()) - served == set()

"""AgentX (RFC 2741) for a read-only subagent: the PDU codec and the lookup rules, no I/O.

Theory of operation
-------------------
An AgentX subagent connects to the master agent (net-snmp's ``snmpd`` with ``master
agentx``), opens a session (Open-PDU), registers a subtree (Register-PDU), then answers
the master's Get, GetNext and GetBulk PDUs for OIDs in that subtree with a Response-PDU.
The master does the SNMP side (versions, communities, USM); the subagent only knows
OIDs and values.

Every PDU is a 20-byte header -- version 1, type, flags, reserved, then session,
transaction and packet ids and the payload length, in the byte order the sender's
``NETWORK_BYTE_ORDER`` flag announces -- and a payload made of 32-bit aligned fields.
OIDs are compressed: a first sub-identifier pair of ``1.3.6.1.N`` (N < 256) becomes
``prefix = N`` (RFC 2741 section 5.1). This module always sends in network byte order
and reads either.

Lookups (:class:`MibView`) work on one sorted snapshot of (OID, type, value), replaced
as a whole when the numbers are refreshed, so a walk never sees half an update:

* Get: the exact OID, else ``noSuchObject``.
* GetNext over a search range (start, end): the first OID after ``start`` (at or after
  it when ``include`` is set) and before ``end`` (when ``end`` is not null), else
  ``endOfMibView``.
* GetBulk: non-repeaters as GetNext, then up to ``max_repetitions`` rounds of GetNext
  on the repeaters, stopping when all of them are at the end of the view.

Sets are refused: TestSet is answered ``notWritable``; the other set phases ``noError``.
"""

from __future__ import annotations

import bisect
import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

OID = tuple[int, ...]
HEADER = 20
NETWORK_BYTE_ORDER = 0x10
NON_DEFAULT_CONTEXT = 0x08
INTERNET = (1, 3, 6, 1)


class PduType(enum.IntEnum):
    OPEN = 1
    CLOSE = 2
    REGISTER = 3
    UNREGISTER = 4
    GET = 5
    GETNEXT = 6
    GETBULK = 7
    TESTSET = 8
    COMMITSET = 9
    UNDOSET = 10
    CLEANUPSET = 11
    NOTIFY = 12
    PING = 13
    RESPONSE = 18


class VarType(enum.IntEnum):
    INTEGER = 2
    OCTET_STRING = 4
    NULL = 5
    OBJECT_IDENTIFIER = 6
    IP_ADDRESS = 64
    COUNTER32 = 65
    GAUGE32 = 66
    TIMETICKS = 67
    OPAQUE = 68
    COUNTER64 = 70
    NO_SUCH_OBJECT = 128
    NO_SUCH_INSTANCE = 129
    END_OF_MIB_VIEW = 130


NOT_WRITABLE = 17  # res.error of a refused TestSet
Value = int | str | bytes | OID | None


class AgentXError(Exception):
    """A PDU that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    flags: int
    session: int
    transaction: int
    packet: int
    length: int

    @property
    def order(self) -> str:
        return "!" if self.flags & NETWORK_BYTE_ORDER else "<"


@dataclass(frozen=True, slots=True)
class Request:
    """A PDU from the master: its header and, for Get/GetNext/GetBulk, the ranges."""

    header: Header
    ranges: list[tuple[OID, bool, OID]] = field(default_factory=list)  # (start, include, end)
    non_repeaters: int = 0
    max_repetitions: int = 0


# ---------------------------------------------------------------- encoding

def encode_oid(oid: Sequence[int], include: bool = False) -> bytes:
    subs = tuple(oid)
    prefix = 0
    if len(subs) >= 5 and subs[:4] == INTERNET and 0 < subs[4] < 256:
        prefix, subs = subs[4], subs[5:]
    return struct.pack("!BBBB", len(subs), prefix, int(include), 0) + struct.pack(f"!{len(subs)}I", *subs)


def encode_octets(data: bytes) -> bytes:
    pad = -len(data) % 4
    return struct.pack("!I", len(data)) + data + b"\0" * pad


def encode_value(vtype: VarType, value: Value) -> bytes:
    if vtype is VarType.INTEGER:
        assert isinstance(value, int)
        return struct.pack("!i", max(-(2**31), min(2**31 - 1, value)))
    if vtype in (VarType.COUNTER32, VarType.GAUGE32, VarType.TIMETICKS):
        assert isinstance(value, int)
        return struct.pack("!I", value % 2**32 if vtype is VarType.COUNTER32 else max(0, min(2**32 - 1, value)))
    if vtype is VarType.COUNTER64:
        assert isinstance(value, int)
        return struct.pack("!Q", value % 2**64)
    if vtype in (VarType.OCTET_STRING, VarType.OPAQUE, VarType.IP_ADDRESS):
        data = value.encode() if isinstance(value, str) else value
        assert isinstance(data, bytes)
        return encode_octets(data)
    if vtype is VarType.OBJECT_IDENTIFIER:
        assert isinstance(value, tuple)
        return encode_oid(value)
    return b""  # Null, noSuchObject, noSuchInstance, endOfMibView


def encode_varbind(oid: OID, vtype: VarType, value: Value) -> bytes:
    return struct.pack("!HH", vtype, 0) + encode_oid(oid) + encode_value(vtype, value)


def pdu(ptype: PduType, payload: bytes, *, session: int = 0, transaction: int = 0, packet: int = 0,
        flags: int = 0) -> bytes:
    return struct.pack("!BBBBIIII", 1, ptype, flags | NETWORK_BYTE_ORDER, 0, session, transaction, packet,
                       len(payload)) + payload


def open_pdu(packet: int, oid: OID, description: str, timeout: int = 0) -> bytes:
    return pdu(PduType.OPEN, struct.pack("!B3x", timeout) + encode_oid(oid) + encode_octets(description.encode()),
               packet=packet)


def register_pdu(session: int, packet: int, subtree: OID, priority: int = 127, timeout: int = 0) -> bytes:
    return pdu(PduType.REGISTER, struct.pack("!BBBx", timeout, priority, 0) + encode_oid(subtree),
               session=session, packet=packet)


def close_pdu(session: int, packet: int, reason: int = 5) -> bytes:  # 5: reasonShutdown
    return pdu(PduType.CLOSE, struct.pack("!B3x", reason), session=session, packet=packet)


def response_pdu(h: Header, varbinds: Sequence[tuple[OID, VarType, Value]], error: int = 0, index: int = 0,
                 uptime: int = 0) -> bytes:
    body = struct.pack("!IHH", uptime, error, index) + b"".join(encode_varbind(*vb) for vb in varbinds)
    return pdu(PduType.RESPONSE, body, session=h.session, transaction=h.transaction, packet=h.packet)


# ---------------------------------------------------------------- decoding

def parse_header(data: bytes) -> Header:
    if len(data) < HEADER:
        raise AgentXError("short header")
    version, ptype, flags = data[0], data[1], data[2]
    if version != 1:
        raise AgentXError(f"AgentX version {version}")
    order = "!" if flags & NETWORK_BYTE_ORDER else "<"
    session, transaction, packet, length = struct.unpack_from(order + "IIII", data, 4)
    if length % 4:
        raise AgentXError("payload length not a multiple of 4")
    return Header(ptype, flags, session, transaction, packet, length)


def decode_oid(data: bytes, pos: int, order: str) -> tuple[OID, bool, int]:
    if pos + 4 > len(data):
        raise AgentXError("truncated OID")
    n, prefix, include = data[pos], data[pos + 1], data[pos + 2]
    pos += 4
    if pos + 4 * n > len(data):
        raise AgentXError("truncated OID")
    subs = struct.unpack_from(f"{order}{n}I", data, pos)
    oid = (*INTERNET, prefix, *subs) if prefix else tuple(subs)
    return oid, bool(include), pos + 4 * n


def parse_request(h: Header, payload: bytes) -> Request:
    """The ranges of a Get/GetNext/GetBulk (other PDUs: the header only)."""
    if h.type not in (PduType.GET, PduType.GETNEXT, PduType.GETBULK):
        return Request(h)
    o = h.order
    pos = 0
    if h.flags & NON_DEFAULT_CONTEXT:  # a context we serve like the default one
        (clen,) = struct.unpack_from(o + "I", payload, 0)
        pos = 4 + clen + (-clen % 4)
    nr = mr = 0
    if h.type == PduType.GETBULK:
        nr, mr = struct.unpack_from(o + "HH", payload, pos)
        pos += 4
    ranges = []
    while pos < len(payload):
        start, include, pos = decode_oid(payload, pos, o)
        end, _, pos = decode_oid(payload, pos, o)
        ranges.append((start, include, end))
    return Request(h, ranges, nr, mr)


def parse_response(h: Header, payload: bytes) -> int:
    """The error status of a Response-PDU (0: noError)."""
    if h.type != PduType.RESPONSE or len(payload) < 8:
        raise AgentXError("expected a Response-PDU")
    _, error, _ = struct.unpack_from(h.order + "IHH", payload, 0)
    return int(error)


# ---------------------------------------------------------------- lookups

class MibView:
    """A sorted, immutable snapshot of the objects a subagent serves."""

    def __init__(self, objects: dict[OID, tuple[VarType, Value]]) -> None:
        self.oids = sorted(objects)
        self.objects = objects

    def get(self, oid: OID) -> tuple[OID, VarType, Value]:
        found = self.objects.get(oid)
        return (oid, *found) if found is not None else (oid, VarType.NO_SUCH_OBJECT, None)

    def next(self, start: OID, include: bool, end: OID) -> tuple[OID, VarType, Value]:
        i = bisect.bisect_left(self.oids, start) if include else bisect.bisect_right(self.oids, start)
        if i < len(self.oids) and (not end or self.oids[i] < end):
            oid = self.oids[i]
            return (oid, *self.objects[oid])
        return start, VarType.END_OF_MIB_VIEW, None

    def answer(self, req: Request) -> list[tuple[OID, VarType, Value]]:
        t = req.header.type
        if t == PduType.GET:
            return [self.get(start) for start, _, _ in req.ranges]
        if t == PduType.GETNEXT:
            return [self.next(*r) for r in req.ranges]
        # GetBulk
        nr = min(req.non_repeaters, len(req.ranges))
        out = [self.next(*r) for r in req.ranges[:nr]]
        repeaters = list(req.ranges[nr:])
        for _ in range(req.max_repetitions):
            if not repeaters:
                break
            row = [self.next(*r) for r in repeaters]
            out.extend(row)
            if all(vt is VarType.END_OF_MIB_VIEW for _, vt, _ in row):
                break
            repeaters = [(oid, False, r[2]) for (oid, _, _), r in zip(row, repeaters, strict=True)]
        return out

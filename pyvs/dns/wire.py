"""The per-query work: read a query's question cheaply, finish a precomputed response.

Theory of operation
-------------------
Every response is built by dnspython ahead of time (:mod:`pyvs.dns.answers`). What is
left per query is small and done here on bytes: :func:`scan` reads the 12-byte header
and the one question of an ordinary query (and an OPT record without a Client Subnet
option), and :func:`finish` copies a precomputed response with the query's id, its RD
and CD bits and its question bytes (the same name in the client's case: equal length,
so the compression pointers of the precomputed message stay right).

Anything :func:`scan` does not take on (no question or several, another opcode or
class, compression in the question, EDNS with Client Subnet or a version other than 0,
trailing records) returns None and goes through dnspython's full parser in the
responder: the shortcut is an optimisation, never a second DNS implementation.
"""

from __future__ import annotations

ECS_CODE = 8
QR = 0x8000
TC = 0x0200
FLAG_COPY = 0x0110  # RD and CD are copied from the query


# What the fast path needs of a query: the name in wire form as sent (case preserved),
# the type, whether it had EDNS, the client's UDP payload size (512 without EDNS), and
# the offset just past the question. A plain tuple: building a NamedTuple per query
# costs more than the rest of the scan.
Question = tuple[bytes, int, bool, int, int]

_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1 AN=0 NS=0 AR=0
_WITH_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # ... AR=1


def scan(data: bytes) -> Question | None:
    """The question of an ordinary query, or None for anything else (see module doc)."""
    n = len(data)
    if n < 17 or data[2] & 0xF8:  # QR set, or an opcode other than QUERY
        return None
    counts = data[4:12]
    if counts == _PLAIN:
        edns = False
    elif counts == _WITH_OPT:
        edns = True
    else:
        return None
    pos = 12
    while True:
        ln = data[pos]
        if ln == 0:
            break
        if ln > 63:
            return None  # compression pointer or reserved label type
        pos += ln + 1
        if pos >= n:
            return None
    pos += 1
    end = pos + 4
    if pos > 267 or end > n or data[pos + 2] != 0 or data[pos + 3] != 1:  # too long, or not class IN
        return None
    qtype = (data[pos] << 8) | data[pos + 1]
    if not edns:
        return (data[12:pos], qtype, False, 512, end) if end == n else None
    opt = end + 11
    # OPT: root name, type 41, payload, extended rcode, version 0, flags, rdlength
    if opt > n or data[end:end + 3] != b"\x00\x00\x29" or data[end + 6]:
        return None
    stop = opt + ((data[opt - 2] << 8) | data[opt - 1])
    if stop != n:
        return None
    while opt < stop:  # options: Client Subnet changes the answer; others are ignored
        if opt + 4 > stop:
            return None
        if data[opt] == 0 and data[opt + 1] == ECS_CODE:
            return None
        opt += 4 + ((data[opt + 2] << 8) | data[opt + 3])
    if opt != stop:
        return None
    payload = (data[end + 3] << 8) | data[end + 4]
    return data[12:pos], qtype, True, payload if payload > 512 else 512, end


def finish(wire: bytes, query: bytes, q: Question, limit: int) -> bytes:
    """The precomputed ``wire`` as the answer to ``query``: id, RD/CD and question
    patched in; truncated (TC, question and OPT only) when longer than ``limit``."""
    qend = q[4]
    flags = ((wire[2] << 8) | wire[3]) | (((query[2] << 8) | query[3]) & FLAG_COPY)
    if len(wire) <= limit:
        return query[:2] + flags.to_bytes(2, "big") + wire[4:12] + query[12:qend] + wire[qend:]
    # Truncated: the question alone (and our OPT), TC set; the client retries over TCP.
    flags |= TC
    if q[2]:
        return query[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x01" + query[12:qend] + wire[-11:]
    return query[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:qend]

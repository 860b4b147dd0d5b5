"""Fuzz: the chunked framer (pyvs/http/framing.py).

:func:`oracles.check_chunked` feeds a stream whole, split at random points and at a
start offset, decoded and not: the outcome (end position, decoded bytes, trailers,
"need more" or ProtocolError) must be the same every way, and nothing else may be
raised. Inputs are valid chunked bodies (any sizes, hex case, leading zeros,
extensions, trailers, bytes after the end), their mutations, and raw bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody

from .oracles import check_chunked, chunked_outcome, fuzz


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    """(wire bytes, decoded data, trailer section)."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=64), max_size=6))
    wire = b""
    for p in pieces:
        size = draw(st.sampled_from(["%x", "%X", "0%x", "000%x"])) % len(p)
        ext = draw(st.sampled_from(["", ";a", ";a=b", ';n="q v"', ";x;y=1"]))
        wire += f"{size}{ext}\r\n".encode() + p + b"\r\n"
    wire += draw(st.sampled_from([b"0", b"00", b"0;ext=1"])) + b"\r\n"
    trailers = draw(st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: b\r\nC:\r\n", b"Expires: Mon, 1 Jan\r\n"]))
    wire += trailers + b"\r\n"
    return wire, b"".join(pieces), trailers


def _cuts() -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, 600), max_size=12)


@fuzz(400)
@given(chunked_bodies(), st.binary(max_size=8), _cuts())
def test_valid_bodies_decode_the_same_under_any_split(body: tuple[bytes, bytes, bytes], after: bytes,
                                                      cuts: list[int]) -> None:
    wire, data, trailers = body
    assert chunked_outcome(wire + after, []) == ("done", len(wire), data, trailers)
    check_chunked(wire + after, cuts)
    # One byte at a time, the hardest split.
    assert chunked_outcome(wire + after, list(range(len(wire) + len(after)))) == ("done", len(wire), data, trailers)


@fuzz(600)
@given(chunked_bodies(), st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), min_size=1, max_size=3),
       _cuts())
def test_mutated_bodies_mean_the_same_under_any_split(body: tuple[bytes, bytes, bytes],
                                                      edits: list[tuple[int, bytes]], cuts: list[int]) -> None:
    data = bytearray(body[0])
    for at, new in edits:
        at %= len(data) + 1
        data[at : at + len(new) // 2] = new
    check_chunked(bytes(data), cuts)


@fuzz(400)
@given(st.binary(max_size=200), _cuts())
def test_random_bytes_mean_the_same_under_any_split(stream: bytes, cuts: list[int]) -> None:
    check_chunked(stream, cuts)


def test_random_bytes_never_raise_anything_else() -> None:
    # Malformed sizes, extensions and trailers: ProtocolError only.
    for bad in (b"-1\r\n", b"0x1\r\n", b"1 \r\n", b"10000000000000000\r\n", b"1\r\nab", b"0\r\n: x\r\n",
                b"0\r\nA B: x\r\n", b"1;\x00\r\n", b"\r\n"):
        with pytest.raises(ProtocolError):
            ChunkedBody().feed(bad + b"\r\n\r\n", 0)


@pytest.mark.parametrize("kind", ["size line", "trailer"])
def test_a_line_at_the_limit_means_the_same_split_or_whole(kind: str) -> None:
    if kind == "size line":
        line = b"1;" + b"e" * (4096 - 2)
        stream = line + b"\r\nx\r\n0\r\n\r\n"
    else:
        line = b"X: " + b"v" * (4096 - 3)
        stream = b"0\r\n" + line + b"\r\n\r\n"
    assert len(line) == 4096
    whole = chunked_outcome(stream, [])
    assert whole[0] == "done"
    split_before_lf = stream.index(line) + len(line) + 1  # the CR arrived, the LF not yet
    assert chunked_outcome(stream, [split_before_lf]) == whole

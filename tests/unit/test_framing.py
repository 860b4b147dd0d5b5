"""Body framers: exact end offsets, any fragmentation, strict chunk syntax."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody, LengthBody, UntilClose


def test_length_body_stops_at_its_end() -> None:
    f = LengthBody(5)
    assert f.feed(b"HEADabc", 4) == (7, False)
    assert f.feed(b"deNEXT", 0) == (2, True)


def test_until_close_takes_everything() -> None:
    assert UntilClose().feed(b"abc", 1) == (3, False)


def encode(pieces: list[bytes], trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailers + b"\r\n"


@settings(derandomize=True, max_examples=200)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
    trailers=st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: b\r\nC: d\r\n"]),
)
def test_chunked_any_split_decodes_and_ends_exactly(pieces: list[bytes], cuts: list[int], trailers: bytes) -> None:
    wire = encode(pieces, trailers)
    stream = wire + b"NEXT"
    bounds = [*sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    f = ChunkedBody(decode=True)
    start = 0
    consumed = 0
    done = False
    for b in bounds:
        part = stream[start:b]
        end, done = f.feed(part, 0)
        consumed += end
        start = b
        if done:
            assert part[end:] + stream[b:] == b"NEXT"
            break
    assert done and consumed == len(wire)
    assert b"".join(f.decoded) == b"".join(pieces)
    assert f.trailers == trailers


@pytest.mark.parametrize(
    "bad",
    [
        b"zz\r\n",  # not hex
        b"5\r\nhelloXX",  # data not followed by CRLF
        b"5\nhello\r\n",  # bare LF after size
        b"12345678901234567\r\n",  # absurd size
        b"0\r\nBad Trailer\r\n\r\n",
        b"-1\r\n",
    ],
)
def test_chunked_rejects_bad_syntax(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedBody().feed(bad, 0)


def test_chunked_line_length_is_bounded() -> None:
    f = ChunkedBody()
    with pytest.raises(ProtocolError):
        f.feed(b"1;" + b"e" * 10000, 0)

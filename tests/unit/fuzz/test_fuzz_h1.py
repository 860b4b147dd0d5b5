"""Fuzz: both HTTP head paths (C scanner and llhttp) on generated and mutated heads.

Every input goes through :func:`oracles.check_head`: the two paths give the same
result, nothing but ProtocolError escapes, and an accepted head re-serialises (as the
proxy forwards it) into a head that parses to the same request or response with no
hop-by-hop field left. tests/unit/test_h1_scan.py compares the paths on single-byte
changes; this module adds a grammar of heads with the fields pyvs acts on, mutations
of realistic heads (splices, duplications, deletions, case flips) and raw bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvs.http import h1
from pyvs.http.errors import ProtocolError

from .oracles import check_head, cut, fuzz

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n",
    b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\n\r\n",
    b"GET http://a.example/p?q HTTP/1.1\r\nHost: b\r\nProxy-Connection: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nKeep-Alive: timeout=5\r\nConnection: Keep-Alive\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
]

_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PATCH", b"get", b"M-SEARCH", b""]
_TARGETS = [b"/", b"/a?b=c", b"*", b"http://h.example/x", b"https://h:1/", b"h:443", b"/%00", b"//", b"/a#f",
            b"ftp://h/", b"http://u@h/", b"http://[::1]:8/", b"http://h?x", b"http:///", b""]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/11"]
_NAMES = [b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"transfer-encoding", b"Connection",
          b"Upgrade", b"Expect", b"Keep-Alive", b"TE", b"Trailer", b"Proxy-Connection", b"Proxy-Authorization",
          b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded", b"X-Drop", b"Accept",
          b"Set-Cookie", b"Cookie", b"ETag", b"Server", b"Date", b"Content-Type", b"Hostx"]
_VALUES = [b"", b"h", b"a.example:8080", b"[::1]:80", b"0", b"5", b"00", b"18446744073709551616", b"chunked",
           b"gzip, chunked", b"chunked, gzip", b"xchunked", b"identity", b"keep-alive", b"close", b"Upgrade",
           b"upgrade, x-drop", b"close, keep-alive", b"websocket", b"100-continue", b"trailers", b"1.2.3.4",
           b"for=1.2.3.4;proto=https", b"a\tb", b"\xff", b"x-drop", b"content-length", b"host"]
_SEPS = [b": ", b":", b":\t", b" :", b":  "]
_EOLS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n "]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        code = draw(st.sampled_from([b"200", b"204", b"304", b"100", b"101", b"302", b"404", b"599", b"099", b"1000"]))
        start = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"])) + b" " + code
        start += draw(st.sampled_from([b" OK", b" ", b"", b" Not\tFound"]))
    else:
        start = b" ".join((draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_TARGETS)),
                           draw(st.sampled_from(_VERSIONS))))
    out = start + draw(st.sampled_from(_EOLS))
    for _ in range(draw(st.integers(0, 7))):
        name = draw(st.sampled_from(_NAMES))
        value = draw(st.sampled_from(_VALUES))
        out += name + draw(st.sampled_from(_SEPS)) + value + draw(st.sampled_from(_EOLS))
    return cut(out + b"\r\n")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A realistic head after a few structural edits."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "dup", "splice", "case"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        j = draw(st.integers(i, min(len(data), i + 40)))
        if op == "set" and data:
            data[i] = draw(st.sampled_from(b"\r\n\t :;,\x00\x7f\xff/?#[]@0123456789aAzZ-"))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b":", b",", b"chunked", b"Host: x\r\n",
                                              b"Content-Length: 1\r\n", b"Transfer-Encoding: chunked\r\n"]))
        elif op == "delete":
            del data[i:j]
        elif op == "dup":
            data[j:j] = data[i:j]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            k = draw(st.integers(0, len(other)))
            data[i:] = other[k:]
        else:
            data[i:j] = data[i:j].swapcase()
    return cut(bytes(data))


@fuzz(700)
@given(heads())
def test_generated_heads(block: bytes) -> None:
    check_head(block)


@fuzz(700)
@given(mutated())
def test_mutated_heads(block: bytes) -> None:
    check_head(block)


@fuzz(500)
@given(st.sampled_from([b"", b"GET / HTTP/1.1\r\nHost: h\r\n", b"HTTP/1.1 200 OK\r\n"]), st.binary(max_size=120))
def test_random_bytes_after_a_start(prefix: bytes, raw: bytes) -> None:
    check_head(cut(prefix + raw))


@pytest.mark.parametrize("block", SEEDS)
def test_seeds_are_accepted(block: bytes) -> None:
    check_head(block)  # the mutations start from heads that exercise the accept path


@pytest.mark.parametrize("code", [b"000", b"099"])
def test_a_status_below_100_is_refused(code: bytes) -> None:
    block = b"HTTP/1.1 " + code + b" OK\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError):
        h1.parse_response_head(block, head_request=False)


def test_a_request_line_after_a_bare_lf_is_refused() -> None:
    block = b"\nDELETE /x HTTP/1.1\r\nHost: h\r\n\r\n"
    try:
        head = h1.parse_request_head(block)
    except ProtocolError:
        return  # refused, as "\r\nDELETE ..." is: fine
    assert head.method == b"DELETE" and head.block.startswith(b"DELETE /x HTTP/1.1\r\n")

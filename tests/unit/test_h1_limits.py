"""Response transfer codings (RFC 9112 6.1, 6.3), the chunked body limit, and heads
that can never complete (issue 13)."""

from __future__ import annotations

import pytest

from pyvs.http import h1
from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody
from pyvs.l7.h1conn import _incomplete_head_error
from tests.unit.test_h1_scan import _same


def _resp(te: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: " + te + b"\r\nServer: x\r\n\r\n"


@pytest.mark.parametrize(
    ("te", "framing", "codings"),
    [
        (b"chunked", h1.CHUNKED, None),
        (b"Chunked", h1.CHUNKED, None),
        (b"gzip, chunked", h1.CHUNKED, b"gzip"),
        (b"GZIP,chunked", h1.CHUNKED, b"gzip"),
        (b"x-gzip , deflate, chunked", h1.CHUNKED, b"x-gzip, deflate"),
        (b", chunked", h1.CHUNKED, None),  # empty list elements are ignored
        (b"gzip", h1.UNTIL_CLOSE, b"gzip"),  # final coding not chunked: delimited by the close
        (b"gzip, deflate", h1.UNTIL_CLOSE, b"gzip, deflate"),
    ],
)
def test_response_codings(te: bytes, framing: int, codings: bytes | None) -> None:
    rh = h1.parse_response_head(_resp(te), head_request=False)
    assert (rh.framing, rh.codings, rh.raw_ok) == (framing, codings, False)
    assert b"Transfer-Encoding" not in rh.block  # hop-by-hop: the client's is rebuilt
    assert rh.keep_alive == (framing == h1.CHUNKED)


@pytest.mark.parametrize(
    "te",
    [b"xchunked", b"chunkedx", b"identity", b"foo", b"foo, chunked", b"chunked, gzip", b"chunked, chunked",
     b"chunked;x=1", b"gzip;q=1, chunked", b",", b" "],
)
def test_response_codings_refused(te: bytes) -> None:
    # Whatever the status says (llhttp's own refusals say 400), a server's broken
    # head is answered 502 (pyvs.upstream.connection -> Exchange.upstream_lost).
    with pytest.raises(ProtocolError):
        h1.parse_response_head(_resp(te), head_request=False)


def test_codings_of_several_fields_combine() -> None:
    rh = h1.parse_response_head(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", head_request=False
    )
    assert (rh.framing, rh.codings) == (h1.CHUNKED, b"gzip")


def test_codings_are_checked_for_bodiless_responses_too() -> None:
    rh = h1.parse_response_head(_resp(b"gzip, chunked"), head_request=True)
    assert rh.framing == h1.NO_BODY
    with pytest.raises(ProtocolError):
        h1.parse_response_head(_resp(b"xchunked", b"304 Not Modified"), head_request=False)


@pytest.mark.parametrize(
    "te", [b"chunked", b"xchunked", b"gzip, chunked", b"gzip", b"chunked, gzip", b"identity", b"chunked;x=1"]
)
def test_scanner_refuses_every_transfer_encoding(monkeypatch: pytest.MonkeyPatch, te: bytes) -> None:
    if h1._scan_response is None:
        pytest.skip("the C scanner is not built")
    assert h1._scan_response(_resp(te), False) is None
    assert not _same(monkeypatch, _resp(te))  # both paths agree (the scanner declined)


def test_chunked_limit_counts_chunk_sizes() -> None:
    body = ChunkedBody(limit=10)
    assert body.feed(b"5\r\nhello\r\n5\r\nworld\r\n", 0) == (20, False)
    with pytest.raises(ProtocolError) as err:
        body.feed(b"1\r\n!", 0)  # refused at the size line, before its data is passed on
    assert err.value.status == 413
    unlimited = ChunkedBody()
    assert unlimited.feed(b"ff\r\n" + b"x" * 255 + b"\r\n0\r\n\r\n", 0) == (266, True)
    assert unlimited.total == 255


@pytest.mark.parametrize(
    "data",
    [b"GET /\n", b"GET /\r\n", b"GET / HTTP/1.1\n", b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\r\nHost: a\n\n",
     b"GET / HTTP/1.1\r\nHost: a\n", b"GET /index.html\r\nHost: a\r\n", b"GET / FTP/1.0\r\n"],
)
def test_heads_that_cannot_complete(data: bytes) -> None:
    err = _incomplete_head_error(data)
    assert err is not None and err.status == 400


@pytest.mark.parametrize(
    "data", [b"GET / HT", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.0\r\nHost: a\r\n", b"GET / HTTP/1.1\r\nHost: a\r", b"G"]
)
def test_partial_heads_wait(data: bytes) -> None:
    assert _incomplete_head_error(data) is None

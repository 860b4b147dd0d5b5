"""The HTTP/1.1 readers, fed bytes without sockets (h11 style): events out, errors named."""

from __future__ import annotations

from typing import Any

import pytest

from pyvs.http.codec import ProtocolError, RequestHead, RequestReader, ResponseHead, ResponseReader


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.heads: list[Any] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.method, head.target))

    def on_request_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_request_end(self, trailers: bytes) -> None:
        self.events.append(("end", trailers))

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.status))

    on_response_body = on_request_body
    on_response_end = on_request_end


def feed_request(data: bytes, *, step: int = 0, max_head: int = 65536) -> Recorder:
    rec = Recorder()
    reader = RequestReader(rec, max_head)
    if step:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
    else:
        reader.feed(data)
    return rec


def body_of(rec: Recorder) -> bytes:
    return b"".join(e[1] for e in rec.events if e[0] == "body")


@pytest.mark.parametrize("step", [0, 1, 7])
def test_content_length_request_any_fragmentation(step: int) -> None:
    rec = feed_request(b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello", step=step)
    assert rec.events[0] == ("head", b"POST", b"/a?b=1")
    assert body_of(rec) == b"hello"
    assert rec.events[-1] == ("end", b"")
    head = rec.heads[0]
    assert head.content_length == 5 and not head.chunked
    assert bytes(head.fields) == b"Content-Length: 5\r\nX-Y: z\r\n"
    assert head.host == b"h" and head.path == b"/a"


@pytest.mark.parametrize("step", [0, 3])
def test_chunked_request_with_trailers(step: int) -> None:
    raw = (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n")
    rec = feed_request(raw, step=step)
    assert body_of(rec) == b"abcde"
    assert rec.events[-1] == ("end", b"X-Sum: 9\r\n")
    head = rec.heads[0]
    assert head.chunked and head.content_length is None
    assert b"Transfer-Encoding" not in head.fields


def test_pipelined_requests_in_one_feed() -> None:
    rec = feed_request(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert rec.events == [("head", b"GET", b"/1"), ("end", b""), ("head", b"GET", b"/2"), ("end", b"")]


def test_hop_by_hop_and_connection_named_fields_are_not_forwarded() -> None:
    rec = feed_request(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nUpgrade: foo\r\nAccept: */*\r\n\r\n"
    )
    assert bytes(rec.heads[0].fields) == b"Accept: */*\r\n"


def test_forwarding_headers_are_captured_not_copied() -> None:
    rec = feed_request(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
        b"Forwarded: for=3.3.3.3\r\n\r\n"
    )
    head = rec.heads[0]
    assert head.xff == b"1.1.1.1, 2.2.2.2"
    assert head.forwarded == b"for=3.3.3.3"
    assert bytes(head.fields) == b""


def test_http10_keepalive_and_expect() -> None:
    rec = feed_request(b"GET / HTTP/1.0\r\n\r\n")
    assert rec.heads[0].version == "1.0" and not rec.heads[0].keep_alive
    rec = feed_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert rec.heads[0].keep_alive
    rec = feed_request(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert rec.heads[0].expect_continue and rec.events[-1][0] == "head"


def test_upgrade_request_returns_tunnel_offset() -> None:
    rec = Recorder()
    reader = RequestReader(rec)
    raw = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    offset = reader.feed(raw + b"\x81\x05frame")
    assert offset == len(raw)
    assert rec.heads[0].upgrade and rec.heads[0].upgrade_proto == b"websocket"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n", 400),
    ],
)
def test_malformed_requests_raise_protocol_error(raw: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        feed_request(raw)
    assert info.value.status == status


def test_head_size_limit_whole_and_fragmented() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 5000 + b"\r\n\r\n"
    with pytest.raises(ProtocolError) as info:
        feed_request(raw, max_head=2048)
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        feed_request(raw, max_head=2048, step=512)
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        feed_request(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", max_head=2048)
    assert info.value.status == 414
    # A large body after a small head is not a large head.
    rec = feed_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10000, max_head=2048)
    assert len(body_of(rec)) == 10000


def feed_response(chunks: list[tuple[bool, bytes]]) -> Recorder:
    rec = Recorder()
    reader = ResponseReader(rec)
    for head_request, data in chunks:
        reader.expect(head_request)
        reader.feed(data)
    return rec


def test_response_framings() -> None:
    rec = feed_response([
        (False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc"),
        (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n"),
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),  # HEAD: ends at the head
        (False, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (False, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
        (False, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ])
    assert rec.events == [
        ("head", 200), ("body", b"abc"), ("end", b""),
        ("head", 200), ("body", b"hi"), ("end", b"T: 1\r\n"),
        ("head", 200), ("end", b""),
        ("head", 204), ("end", b""),
        ("head", 304), ("end", b""),
        ("head", 100), ("end", b""), ("head", 201), ("end", b""),
    ]
    assert bytes(rec.heads[0].fields) == b"X: y\r\n" and rec.heads[0].content_length == 3
    assert rec.heads[1].chunked and rec.heads[2].content_length == 99


def test_close_delimited_response_streams_body() -> None:
    rec = feed_response([(False, b"HTTP/1.0 200 OK\r\n\r\npart1"), (False, b"part2")])
    head = rec.heads[0]
    assert head.content_length is None and not head.chunked and not head.keep_alive
    assert body_of(rec) == b"part1part2"


def test_switching_protocols_returns_offset() -> None:
    rec = Recorder()
    reader = ResponseReader(rec)
    reader.expect(False)
    raw = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert reader.feed(raw + b"DATA") == len(raw)
    assert rec.heads[0].upgrade and rec.heads[0].upgrade_proto == b"websocket"


def test_malformed_response_is_502() -> None:
    with pytest.raises(ProtocolError) as info:
        feed_response([(False, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")])
    assert info.value.status == 502

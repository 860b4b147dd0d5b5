"""Filters that transform a body work on responses of HTTP/2 servers (``proto: h2c``).

Compression and the cache stage a response body (pyvs/l7/filters/base.py); a server
spoken to over HTTP/2 hands its DATA frames to the exchange through
``H2UpstreamStream`` (pyvs/h2/upstream.py), which used to skip the stages: the client
got ``Content-Encoding: gzip`` over the plain bytes, and the connection hung. The
origin here is an h2c server (the h2 library) answering the body of
test_compress_trailers in several DATA frames, then trailers; pyvs runs two workers.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from tests.integration.harness import LoopThread, Pyvs, free_port
from tests.integration.test_compress_trailers import (
    BODY,
    DROPPED,
    KEPT,
    compressing,
    decode,
    fields,
    h2_get,
    raw11,
    read_all,
)

H2_TRAILERS = [("server-timing", "db;dur=53"), ("content-digest", "sha-256=:x:"), ("x-checksum", "abc123")]


class H2cOrigin:
    """Answers every GET with BODY (text/html, or image/png under ``/img``) in DATA frames
    as the client's windows allow, then trailers; ``/cached`` responses may be stored."""

    def __init__(self, lt: LoopThread, max_streams: int | None = None) -> None:
        self.requests = 0
        self.open = 0  # connections open now
        self.max_streams = max_streams
        self.server = lt.run(asyncio.start_server(self.serve, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.open += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        if self.max_streams is not None:
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        w.write(conn.data_to_send())
        pending: dict[int, int] = {}  # stream -> bytes of its body sent so far
        bodies: dict[int, bytes] = {}
        try:
            while data := await r.read(65536):
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for ev in events:
                    if isinstance(ev, h2.events.DataReceived):  # (request bodies: taken, window given back)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.RequestReceived):
                        self.requests += 1
                        path = dict(ev.headers)[":path"]
                        if path.startswith("/upload"):  # answered before the body is in (HTTP/2 allows it)
                            conn.send_headers(ev.stream_id, [(":status", "401"), ("content-length", "0")],
                                              end_stream=True)
                            continue
                        if path.endswith("/c204"):
                            conn.send_headers(ev.stream_id, [(":status", "204"),
                                                             ("cache-control", "public, max-age=60")], end_stream=True)
                            continue
                        bodies[ev.stream_id] = BODY
                        ctype = "image/png" if path.startswith("/img") else "text/html"
                        cc = "public, max-age=60" if path.startswith("/cached") else "no-store"
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", ctype),
                                                         ("cache-control", cc)])
                        pending[ev.stream_id] = 0
                    elif isinstance(ev, h2.events.StreamReset):
                        pending.pop(ev.stream_id, None)
                for sid in list(pending):
                    sent, body = pending[sid], bodies[sid]
                    while sent < len(body):
                        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, 40_000,
                                   len(body) - sent)
                        if room <= 0:
                            break  # the client's WINDOW_UPDATE brings us back here
                        conn.send_data(sid, body[sent:sent + room])
                        sent += room
                    pending[sid] = sent
                    if sent == len(body):
                        conn.send_headers(sid, H2_TRAILERS, end_stream=True)
                        del pending[sid]
                w.write(conn.data_to_send())
                await w.drain()
        finally:
            self.open -= 1
            w.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def port(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    origin = H2cOrigin(loop_thread)
    port = free_port()
    cfg = compressing(port, {"address": origin.address, "proto": "h2c"})
    p = Pyvs(cfg, tmp_path_factory.mktemp("h2-upstream-staged"), workers=2)
    yield port
    p.stop()
    origin.close()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_http11_client_gets_the_compressed_body_and_trailers(port: int, coding: str) -> None:
    for _ in range(2):  # the second request reuses the pooled h2 connection of its worker
        head, body, trailers, after = raw11(port, "/page", coding)
        assert f"content-encoding: {coding}".encode() in head.lower()
        assert len(body) < len(BODY) // 2 and decode(coding, body) == BODY
        assert fields(trailers) == KEPT  # the digest of the uncompressed bytes is gone
        assert after == b""


def test_h2_client_gets_the_compressed_body_and_trailers(port: int) -> None:
    head, body, tail = h2_get(port, "/page", "gzip")
    assert (b"content-encoding", b"gzip") in head
    assert gzip.decompress(body) == BODY
    assert [type(ev) for ev in tail] == [h2.events.TrailersReceived, h2.events.StreamEnded]
    assert list(tail[0].headers) == KEPT


def test_http10_client_gets_an_intact_compressed_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /page HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    d = zlib.decompressobj(31)
    assert d.decompress(body) == BODY and d.eof and d.unused_data == b""


def test_uncompressed_type_passes_with_every_trailer(port: int) -> None:
    _, body, trailers, _ = raw11(port, "/img", "gzip")
    assert body == BODY
    assert [n.decode() for n, _ in fields(trailers)] == [n for n, _ in H2_TRAILERS]


def test_cache_stores_an_h2_servers_response(port: int) -> None:
    head, body, trailers, _ = raw11(port, "/cached/page", "gzip")
    assert b"x-cache: miss" in head.lower() and gzip.decompress(body) == BODY
    assert trailers == b""  # a stored response carries none, on the miss as on the hits
    for _ in range(4):  # new connections: both workers
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /cached/page HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
            data = read_all(s)
        head2, _, rest = data.partition(b"\r\n\r\n")
        assert b"x-cache: hit" in head2.lower()
        assert gzip.decompress(rest) == BODY
    assert not any(name in head.lower().decode() for name in DROPPED)


def test_bodiless_requests_on_a_pooled_connection_leave_at_once(port: int) -> None:
    """A GET on an h2 server connection already open (each worker pools one) used to wait
    in the HTTP/2 library's buffer until something else flushed it: the client hung."""
    for _ in range(5):  # new client connections, two workers: each reuses its pooled one
        _, body, _, _ = raw11(port, "/img", "identity")
        assert body == BODY


# ------------------------------------------------ one worker, one pooled server connection
def _one(loop_thread: LoopThread, tmp_path: Any, max_streams: int) -> Iterator[tuple[int, H2cOrigin]]:
    origin = H2cOrigin(loop_thread, max_streams=max_streams)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"],
            "routes": [{"match": {"path_prefix": "/cached"}, "backend": "be", "cache": {"size": "8m"}},
                       {"backend": "be"}],
        }],
        "backends": [{"name": "be", "timeouts": {"server": "20s"},
                      "servers": [{"name": "s1", "address": origin.address, "proto": "h2c"}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    yield port, origin
    p.stop()
    origin.close()


@pytest.fixture()
def one(loop_thread: LoopThread, tmp_path: Any) -> Iterator[tuple[int, H2cOrigin]]:
    yield from _one(loop_thread, tmp_path, 10)


@pytest.fixture()
def narrow(loop_thread: LoopThread, tmp_path: Any) -> Iterator[tuple[int, H2cOrigin]]:
    yield from _one(loop_thread, tmp_path, 1)


def test_a_connection_replaced_at_its_stream_limit_is_closed(narrow: tuple[int, H2cOrigin]) -> None:
    """The server takes one stream per connection: concurrent requests make pyvs open
    more. Each replaced connection must close once its stream is done; they used to
    stay open, unused, for the life of the worker."""
    port, origin = narrow
    for _ in range(4):
        with ThreadPoolExecutor(3) as pool:
            bodies = list(pool.map(lambda _: raw11(port, "/img", "identity")[1], range(3)))
        assert bodies == [BODY] * 3
    deadline = time.monotonic() + 10
    while origin.open > 1:  # (polled: the origin's count is the only witness)
        assert time.monotonic() < deadline, f"{origin.open} server connections still open"
        time.sleep(0.05)


def test_uploads_answered_early_do_not_pin_the_servers_streams(one: tuple[int, H2cOrigin]) -> None:
    """The server answers 401 before the upload is in: pyvs must reset its half of the
    stream, or each such stream keeps one of the server's 10 concurrent streams."""
    port, _ = one
    for _ in range(14):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 401"), head[:80]
    _, body, _, _ = raw11(port, "/page", "identity")
    assert body == BODY


def test_a_stored_204_has_no_body_framing(one: tuple[int, H2cOrigin]) -> None:
    """A cacheable 204 through a cache route (the response is staged for the recorder):
    no Transfer-Encoding and no last-chunk after it, the keep-alive connection stays in step."""
    port, _ = one
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        req = b"GET /cached/c204 HTTP/1.1\r\nHost: t\r\n\r\n"
        s.sendall(req + req + b"GET /cached/c204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    heads = data.split(b"\r\n\r\n")
    assert heads[-1] == b"" and len(heads) == 4, data  # three heads and nothing else
    for h in heads[:3]:
        assert h.startswith(b"HTTP/1.1 204") and b"transfer-encoding" not in h.lower(), h
    assert b"x-cache: hit" in heads[2].lower()

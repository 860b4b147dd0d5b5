"""Trailers survive compression (issue 15/16 gap), end to end with two workers.

A raw asyncio HTTP/1.1 origin answers chunked, in several chunks, and ends the body
with a trailer section: ``Server-Timing`` and ``X-Checksum`` (which must arrive after
the compressed body) and the integrity fields ``Content-Digest``, ``Content-MD5``,
``Digest`` and ``Repr-Digest`` (which describe the bytes before compression and must
not). Clients: curl ``--compressed`` over HTTP/1.1 and over h2c, a raw HTTP/1.1 socket
that parses the chunked framing itself, and a raw HTTP/1.0 socket (no trailers, body
intact). Every body is decompressed and compared byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import h2.config
import h2.connection
import h2.events
import pytest
import zstandard

from tests.integration.harness import LoopThread, Pyvs, RawBackend, curl, free_port, heads
from tests.integration.test_compression import text

BODY = text(150_000, seed=15)
SHA = base64.b64encode(hashlib.sha256(BODY).digest())
MD5 = base64.b64encode(hashlib.md5(BODY).digest())  # Content-MD5 is MD5 by definition
KEPT = [(b"server-timing", b"db;dur=53"), (b"x-checksum", b"abc123")]
TRAILERS = (b"Server-Timing: db;dur=53\r\n"
            b"Content-Digest: sha-256=:" + SHA + b":\r\n"
            b"Content-MD5: " + MD5 + b"\r\n"
            b"Digest: SHA-256=" + SHA + b"\r\n"
            b"Repr-Digest: sha-256=:" + SHA + b":\r\n"
            b"X-Checksum: abc123\r\n")
DROPPED = ("content-digest", "content-md5", "digest", "repr-digest")


async def origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Chunked with trailers; the path picks the type (``/img``: not compressed) and
    whether the response may be cached (``/cached``)."""
    async for head in heads(r):
        path = head.split(b" ", 2)[1]
        ctype = b"image/png" if path.startswith(b"/img") else b"text/html"
        cc = b"public, max-age=60" if path.startswith(b"/cached") else b"no-store"
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nCache-Control: " + cc
                + b"\r\nTrailer: Server-Timing, Content-Digest, X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(BODY), 40_000):  # several server reads: several compressed pieces
            piece = BODY[i:i + 40_000]
            w.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await w.drain()
        w.write(b"0\r\n" + TRAILERS + b"\r\n")
        await w.drain()


def compressing(port: int, server: dict[str, Any]) -> dict[str, Any]:
    """A listener (HTTP/1.1 and h2c) that compresses text, caching under /cached, in front of ``server``."""
    compress = {"algorithms": ["gzip", "br", "zstd"], "types": ["text/*"]}
    return {
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"], "http2": True,
            "routes": [
                {"match": {"path_prefix": "/cached"}, "backend": "be", "compress": compress,
                 "cache": {"size": "8m", "max_object": "1m"}},
                {"backend": "be", "compress": compress},
            ],
        }],
        "backends": [{"name": "be", "servers": [{"name": "s1", **server}]}],
    }


@pytest.fixture(scope="module")
def port(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    backend = RawBackend(loop_thread, origin)
    port = free_port()
    cfg = compressing(port, {"address": backend.address})
    p = Pyvs(cfg, tmp_path_factory.mktemp("compress-trailers"), workers=2)
    yield port
    p.stop()
    backend.close()


def decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        out: bytes = brotli.decompress(data)
        return out
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def read_all(s: socket.socket) -> bytes:
    out = bytearray()
    while True:
        b = s.recv(65536)
        if not b:
            return bytes(out)
        out += b


def dechunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(body, trailer section, what follows the message) of a chunked body."""
    body = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = data.index(b"\r\n\r\n", pos - 2) + 4
            return bytes(body), data[pos:end - 2], data[end:]
        body += data[pos:pos + size]
        assert data[pos + size:pos + size + 2] == b"\r\n"
        pos += size + 2


def fields(section: bytes) -> list[tuple[bytes, bytes]]:
    return [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(b":") for line in section.split(b"\r\n"))
            if n]


def raw11(port: int, path: str, coding: str) -> tuple[bytes, bytes, bytes, bytes]:
    """An HTTP/1.1 request (the client closes after it): head, body, trailers, rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {coding}\r\nTE: trailers\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = read_all(s)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body, trailers, after = dechunk(rest)
    return head, body, trailers, after


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_http11_chunked_client_gets_trailers_after_the_compressed_body(port: int, coding: str) -> None:
    head, body, trailers, after = raw11(port, "/page", coding)
    low = head.lower()
    assert f"content-encoding: {coding}".encode() in low
    assert b"\r\ntrailer:" not in low  # hop-by-hop: pyvs rebuilt the head
    assert len(body) < len(BODY) // 2 and decode(coding, body) == BODY
    assert fields(trailers) == KEPT  # the integrity fields of the uncompressed bytes are gone
    assert after == b""


def test_curl_http11_compressed_sees_trailers(port: int, tmp_path: Path) -> None:
    out = tmp_path / "body"
    r = curl("--compressed", "--http1.1", "-s", "-D", "-", "-o", str(out), f"http://127.0.0.1:{port}/page")
    assert r.returncode == 0, r.stderr
    dump = r.stdout.decode().lower()  # curl prints the trailer fields after the head's
    assert "content-encoding: gzip" in dump and "transfer-encoding: chunked" in dump
    assert "server-timing: db;dur=53" in dump and "x-checksum: abc123" in dump
    assert not any(f"{name}:" in dump for name in DROPPED), dump
    assert out.read_bytes() == BODY


def test_curl_h2_compressed_sees_trailers(port: int, tmp_path: Path) -> None:
    out = tmp_path / "body"
    r = curl("--http2-prior-knowledge", "--compressed", "-s", "-D", "-", "-o", str(out),
             "-H", "Accept-Encoding: gzip", f"http://127.0.0.1:{port}/page")
    assert r.returncode == 0, r.stderr
    dump = r.stdout.decode().lower()
    assert dump.startswith("http/2 200") and "content-encoding: gzip" in dump
    assert "server-timing: db;dur=53" in dump and "x-checksum: abc123" in dump
    assert not any(f"{name}:" in dump for name in DROPPED), dump
    assert out.read_bytes() == BODY


def h2_get(port: int, path: str, coding: str) -> tuple[list[tuple[bytes, bytes]], bytes, list[Any]]:
    """A raw HTTP/2 exchange (the h2 library as client): head fields, body, and the
    events after the last DATA frame (the trailers must close the stream)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"GET"), (b":path", path.encode()), (b":scheme", b"http"),
                          (b":authority", b"t"), (b"accept-encoding", coding.encode()), (b"te", b"trailers")],
                      end_stream=True)
    head: list[tuple[bytes, bytes]] = []
    body = bytearray()
    tail: list[Any] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = s.recv(65536)
            assert data, "connection closed before the stream ended"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    head = list(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    assert not tail, "DATA after the trailers"
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.TrailersReceived, h2.events.StreamEnded)):
                    tail.append(ev)
                    ended = isinstance(ev, h2.events.StreamEnded)
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {ev}")
            s.sendall(conn.data_to_send())
    return head, bytes(body), tail


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_h2_client_gets_trailers_as_a_final_headers_frame(port: int, coding: str) -> None:
    head, body, tail = h2_get(port, "/page", coding)
    assert (b"content-encoding", coding.encode()) in head
    assert decode(coding, body) == BODY
    assert [type(ev) for ev in tail] == [h2.events.TrailersReceived, h2.events.StreamEnded]
    trailers = tail[0]
    assert trailers.stream_ended is not None  # END_STREAM on the trailers' HEADERS frame
    assert list(trailers.headers) == KEPT


def test_http10_client_gets_no_trailers_and_an_intact_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /page HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    low = head.lower()
    assert low.startswith(b"http/1.1 200") and b"content-encoding: gzip" in low
    assert b"transfer-encoding" not in low and b"content-length" not in low
    d = zlib.decompressobj(31)
    assert d.decompress(body) == BODY and d.eof and d.unused_data == b""  # nothing after the gzip stream
    assert b"server-timing" not in body.lower()


def test_uncompressed_type_keeps_every_trailer(port: int) -> None:
    """Not compressed (image/png): the chunked body and its trailers pass as the server
    sent them, the integrity fields included (they are still true)."""
    _, body, trailers, _ = raw11(port, "/img", "gzip")
    assert body == BODY and trailers == TRAILERS


def test_h2_client_uncompressed_keeps_every_trailer(port: int) -> None:
    head, body, tail = h2_get(port, "/img", "identity")
    assert body == BODY and not any(n == b"content-encoding" for n, _ in head)
    assert len(tail[0].headers) == 6


def test_stored_response_is_served_without_trailers_miss_and_hit(port: int) -> None:
    """A response the cache records loses its trailers, on the miss as on every hit
    (the cache keeps no trailers, RFC 9111 3 allows that): all clients see the same."""
    head, body, trailers, _ = raw11(port, "/cached/page", "gzip")
    assert b"x-cache: miss" in head.lower() and gzip.decompress(body) == BODY
    assert trailers == b""
    for _ in range(4):  # new connections: both workers
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /cached/page HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
            data = read_all(s)
        head2, _, rest = data.partition(b"\r\n\r\n")
        assert b"x-cache: hit" in head2.lower()
        assert gzip.decompress(rest) == BODY  # Content-Length framing: nothing but the body

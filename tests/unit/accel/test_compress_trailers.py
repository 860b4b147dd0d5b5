"""Trailers after a compressed body, without sockets: the compressor's say over the
trailer section, the head's integrity fields, and what an HTTP/1.1 and an HTTP/1.0
client receive from a real H1Connection, exchange and UpstreamConn (fake transports),
the server's bytes cut at every place in the trailer section."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Iterator

import pytest

from pyvs.accel.compress import STALE_DIGESTS, Compression, new_stage
from pyvs.config.accel_schema import Compress
from pyvs.config.loader import load_text
from pyvs.http.h1 import parse_request_head, parse_response_head
from pyvs.l7.h1conn import H1Connection
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn
from tests.unit.test_frontend_short_path import Loop, Transport

TRAILERS = (b"Server-Timing: db;dur=53\r\n"
            b"content-digest: sha-256=:AAAA:\r\n"
            b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
            b"DIGEST: SHA-256=AAAA\r\n"
            b"Repr-Digest: sha-256=:AAAA:\r\n"
            b"Unencoded-Digest: sha-256=:AAAA:\r\n"
            b"X-Digested: yes\r\n")
KEPT = b"Server-Timing: db;dur=53\r\nUnencoded-Digest: sha-256=:AAAA:\r\nX-Digested: yes\r\n"


@pytest.mark.parametrize("alg", ["gzip", "br", "zstd"])
def test_the_compressor_drops_the_digests_of_the_bytes_it_changed(alg: str) -> None:
    stage = new_stage(alg, 1)
    assert stage.trailers(TRAILERS) == KEPT  # type: ignore[attr-defined]
    assert stage.trailers(b"Grpc-Status: 0\r\n") == b"Grpc-Status: 0\r\n"  # type: ignore[attr-defined]
    assert stage.trailers(b"Content-Digest: x\r\n") == b""  # type: ignore[attr-defined]


class _View:
    def __init__(self, accept: bytes | None) -> None:
        self.accept = accept

    def header(self, name: bytes) -> bytes | None:
        return self.accept if name == b"accept-encoding" else None


class _Ex:
    def __init__(self, accept: bytes | None) -> None:
        self.head = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.view = _View(accept)
        self.staged: list[object] = []

    def stage_body(self, stage: object) -> None:
        self.staged.append(stage)


HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n"
        b"Content-Digest: sha-256=:AAAA:\r\nRepr-Digest: sha-256=:AAAA:\r\nContent-MD5: AAAA\r\n"
        b"Unencoded-Digest: sha-256=:AAAA:\r\n\r\n")


def test_a_compressed_head_loses_its_digests_an_uncompressed_one_keeps_them() -> None:
    f = Compression(Compress(algorithms=["gzip"], types=["text/*"]))
    rh = parse_response_head(HEAD, head_request=False)
    ex = _Ex(b"gzip")
    f.on_response(ex, rh)  # type: ignore[arg-type]
    assert ex.staged and b"Content-Encoding: gzip\r\n" in rh.block
    assert STALE_DIGESTS.search(rh.block) is None and b"Unencoded-Digest: sha-256=:AAAA:\r\n" in rh.block
    rh = parse_response_head(HEAD, head_request=False)
    ex = _Ex(None)  # nothing acceptable: not compressed, the fields are still true
    f.on_response(ex, rh)  # type: ignore[arg-type]
    assert not ex.staged and b"Content-Digest: sha-256=:AAAA:\r\n" in rh.block and b"Content-MD5" in rh.block


@pytest.mark.parametrize("types", [["*"], ["application/*"], ["application/grpc"]])
def test_grpc_is_never_compressed(types: list[str]) -> None:
    """gRPC compresses its messages itself (grpc-encoding) and its clients decode no HTTP
    coding: even a route that compresses every type leaves it alone."""
    f = Compression(Compress(algorithms=["gzip"], types=types))
    for ctype in (b"application/grpc", b"application/grpc+proto", b"Application/GRPC; charset=x"):
        rh = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n", head_request=False)
        assert not f.eligible(b"POST", rh)
    rh = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n", head_request=False)
    assert f.eligible(b"POST", rh) == (types != ["application/grpc"])

# ---------------------------------------------------------------- through the exchange
CFG = """
listeners:
  - name: web
    bind: ["127.0.0.1:1"]
    routes:
      - {match: {path_prefix: /c}, backend: be, compress: {algorithms: [gzip], types: ["text/*"]}}
      - {match: {path_prefix: /r}, backend: be, compress: {algorithms: [gzip], types: ["text/*"]},
         cache: {size: 1m, max_object: 64k}}
backends:
  - {name: be, servers: [{name: s1, address: "127.0.0.1:2"}]}
"""
BODY = b"trailers survive compression " * 300
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: public, max-age=60\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%b\r\n" % (len(BODY[i:i + 3000]), BODY[i:i + 3000]) for i in range(0, len(BODY), 3000))
            + b"0\r\n" + TRAILERS + b"\r\n")


class Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = WorkerRuntime(load_text(CFG), 0, self.loop)
        self.rt.batch.loop = Loop()  # type: ignore[assignment]
        self.client = Transport(("127.0.0.1", 5555))
        self.fe = H1Connection(self.rt.listeners[0])
        self.fe.connection_made(self.client)  # type: ignore[arg-type]
        server = self.rt.backends["be"].servers[0]
        self.server_t = Transport()
        self.conn = UpstreamConn(server, None, self.rt.sweeper)
        self.conn.connection_made(self.server_t)  # type: ignore[arg-type]
        server.idle.append(self.conn)

    def received(self) -> bytes:
        self.rt.batch.flush()
        return b"".join(e for e in self.client.events if isinstance(e, bytes))

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def dechunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    body = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        pos = eol + 2
        if not size:
            end = data.index(b"\r\n\r\n", pos - 2) + 4
            return bytes(body), data[pos:end - 2], data[end:]
        body += data[pos:pos + size]
        pos += size + 2


# Cuts of the server's bytes: one read, the last-chunk and trailers alone, a cut inside a
# trailer line, a cut between the last trailer line and the final CRLF, byte by byte at the end.
_TAIL = len(TRAILERS) + 5
CUTS = [(), (len(RESPONSE) - _TAIL,), (len(RESPONSE) - 40,), (len(RESPONSE) - 2,),
        tuple(range(len(RESPONSE) - _TAIL, len(RESPONSE)))]


@pytest.mark.parametrize("cuts", CUTS, ids=["whole", "tail", "mid-line", "final-crlf", "bytewise"])
def test_http11_client_gets_the_trailer_section_after_the_compressed_chunks(rig: Rig, cuts: tuple[int, ...]) -> None:
    rig.fe.data_received(b"GET /c HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    prev = 0
    for cut in (*cuts, len(RESPONSE)):
        rig.conn.data_received(RESPONSE[prev:cut])
        prev = cut
    head, _, rest = rig.received().partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    body, trailers, after = dechunk(rest)
    assert gzip.decompress(body) == BODY
    assert trailers == KEPT and after == b""
    assert rig.server_t.events[-1:] != ["close"]  # the server connection went back to the pool
    assert rig.conn in rig.rt.backends["be"].servers[0].idle
    # the next response on the same connection is framed as usual (the mode is per response)
    rig.client.events.clear()
    rig.fe.data_received(b"GET /c HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    rig.conn.data_received(RESPONSE.replace(b"0\r\n" + TRAILERS, b"0\r\n"))
    head, _, rest = rig.received().partition(b"\r\n\r\n")
    body, trailers, after = dechunk(rest)
    assert gzip.decompress(body) == BODY and trailers == b"" and after == b""


def test_http10_client_gets_the_body_alone(rig: Rig) -> None:
    rig.fe.data_received(b"GET /c HTTP/1.0\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    rig.conn.data_received(RESPONSE)
    rig.rt.batch.flush()
    assert rig.client.events[-1] == "close"  # the close ends the body
    head, _, body = rig.received().partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Encoding: gzip" in head
    d = zlib.decompressobj(31)
    assert d.decompress(body) == BODY and d.eof and d.unused_data == b""


def test_a_stage_without_a_say_drops_the_trailers(rig: Rig) -> None:
    """The cache's recorder keeps no trailers: a stored response has none, on the miss
    as on the hits (the same for every client)."""
    rig.fe.data_received(b"GET /r HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    rig.conn.data_received(RESPONSE)
    head, _, rest = rig.received().partition(b"\r\n\r\n")
    assert b"X-Cache: MISS" in head
    body, trailers, after = dechunk(rest)
    assert gzip.decompress(body) == BODY and trailers == b"" and after == b""
    rig.client.events.clear()
    rig.fe.data_received(b"GET /r HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    head, _, rest = rig.received().partition(b"\r\n\r\n")
    assert b"X-Cache: HIT" in head and gzip.decompress(rest) == BODY

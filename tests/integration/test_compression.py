"""Response compression end to end (issue 16): real curl, raw HTTP/1.0 and 1.1 clients,
Python's zlib, brotli and zstandard decoders; every body compared byte for byte.

The backend is a raw asyncio server (keep-alive) whose path names the framing of the
answer: Content-Length, chunked, or delimited by the close.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.client
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard

from tests.integration.harness import LoopThread, Pyvs, RawBackend, curl, read_head


def text(size: int, seed: int = 16) -> bytes:
    """Compressible, deterministic text (seeded words)."""
    rnd = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"pyvs", b"proxy", b"cache", b"zone", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    return bytes(out[:size])


BODY = text(200_000)
SMALL = text(100)
BIG = 10 * 1024 * 1024


async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await read_head(r)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        path = head.split(b" ", 2)[1].decode()
        ctype = b"text/html; charset=utf-8"
        extra = b""
        body = BODY
        if path.startswith("/small"):
            body = SMALL
        if path.startswith("/image"):
            ctype = b"image/png"
        if path.startswith("/encoded"):
            extra += b"Content-Encoding: gzip\r\n"
            body = gzip.compress(BODY)
        if path.startswith("/notransform"):
            extra += b"Cache-Control: public, no-transform\r\n"
        if path.startswith("/etag"):
            extra += b'ETag: "v1"\r\n'
        if path.startswith("/204"):
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await w.drain()
            continue
        if path.startswith("/304"):
            w.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
            await w.drain()
            continue
        if path.startswith("/big"):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = text(64 * 1024, seed=3)
            for _ in range(BIG // len(piece)):
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await w.drain()
            w.write(b"0\r\n\r\n")
            await w.drain()
            continue
        start = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n" + extra
        if "chunked" in path:
            w.write(start + b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 30_000):
                part = body[i:i + 30_000]
                w.write(b"%x\r\n%s\r\n" % (len(part), part))
                await w.drain()
            w.write(b"0\r\n\r\n")
        elif "close" in path:
            w.write(start + b"Connection: close\r\n\r\n" + body)
            await w.drain()
            return
        else:
            w.write(start + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await w.drain()


@pytest.fixture(scope="module")
def backend(loop_thread: LoopThread) -> Iterator[RawBackend]:
    b = RawBackend(loop_thread, serve)
    yield b
    b.close()


def config(backend: RawBackend, port: int, compress: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"],
            "routes": [
                {"match": {"path_prefix": "/plain/"}, "backend": "be"},
                {"backend": "be", "compress": compress or {"min_size": 256}},
            ],
        }],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }


@pytest.fixture(scope="module")
def pyvs(backend: RawBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pyvs, int]]:
    from tests.integration.harness import free_port

    port = free_port()
    p = Pyvs(config(backend, port), tmp_path_factory.mktemp("compress"), workers=2)
    yield p, port
    p.stop()


DECODERS = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
}


def get11(port: int, path: str, ae: str | None, conn: http.client.HTTPConnection | None = None,
          method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept-Encoding": ae} if ae is not None else {"Accept-Encoding": "identity"}
    c.request(method, path, headers=headers)
    resp = c.getresponse()
    return resp, resp.read()


def get10(port: int, path: str, ae: str) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\nAccept-Encoding: {ae}\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("alg", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_http11_round_trip(pyvs: tuple[Pyvs, int], alg: str, framing: str) -> None:
    _, port = pyvs
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(2):  # the client connection stays usable: chunked framing ends the body
        resp, body = get11(port, f"/{framing}", alg, conn)
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == alg
        assert resp.getheader("Content-Length") is None
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert "Accept-Encoding" in resp.getheader("Vary", "")
        assert DECODERS[alg](body) == BODY
    conn.close()


@pytest.mark.parametrize("alg", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_http10_close_delimited(pyvs: tuple[Pyvs, int], alg: str, framing: str) -> None:
    _, port = pyvs
    head, body = get10(port, f"/{framing}", alg)
    assert head.startswith(b"HTTP/1.1 200")
    lower = head.lower()
    assert f"content-encoding: {alg}".encode() in lower
    assert b"content-length" not in lower and b"transfer-encoding" not in lower
    assert b"connection: close" in lower
    assert DECODERS[alg](body) == BODY


@pytest.mark.parametrize("alg", ["gzip", "br", "zstd"])
def test_curl_compressed(pyvs: tuple[Pyvs, int], alg: str) -> None:
    _, port = pyvs
    r = curl("--compressed", "-H", f"Accept-Encoding: {alg}", "-D", "-", "-o", "/dev/stdout",
             f"http://127.0.0.1:{port}/chunked")
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert f"content-encoding: {alg}".encode() in head.lower()
    assert body == BODY


def test_negotiation_q_values_and_preference(pyvs: tuple[Pyvs, int]) -> None:
    _, port = pyvs
    cases = {
        "gzip, br, zstd": "br",  # equal q: the server's order (br, zstd, gzip)
        "gzip;q=1, br;q=0.5": "gzip",
        "br;q=0, *": "zstd",
        "*;q=0.1, gzip;q=0.9": "gzip",
        "x-gzip": "gzip",
        "deflate": None,
        "gzip;q=0": None,
        "identity": None,
    }
    for ae, want in cases.items():
        resp, body = get11(port, "/length", ae)
        assert resp.getheader("Content-Encoding") == want, ae
        assert "Accept-Encoding" in resp.getheader("Vary", "")
        if want is None:
            assert body == BODY and resp.getheader("Content-Length") == str(len(BODY))


@pytest.mark.parametrize("path", ["/small", "/image", "/encoded", "/notransform", "/plain/length"])
def test_not_compressed(pyvs: tuple[Pyvs, int], path: str) -> None:
    _, port = pyvs
    resp, body = get11(port, path, "gzip, br, zstd")
    assert resp.getheader("Content-Encoding") in (None, "gzip" if path == "/encoded" else None)
    if path == "/encoded":
        assert gzip.decompress(body) == BODY  # passed through untouched
    else:
        assert resp.getheader("Content-Length") is not None
    if path == "/plain/length":
        assert resp.getheader("Vary") is None  # a route without compress is untouched


@pytest.mark.parametrize("path", ["/204", "/304"])
def test_no_body_statuses(pyvs: tuple[Pyvs, int], path: str) -> None:
    _, port = pyvs
    resp, body = get11(port, path, "gzip")
    assert resp.getheader("Content-Encoding") is None and body == b""


def test_head_request_not_compressed(pyvs: tuple[Pyvs, int]) -> None:
    _, port = pyvs
    resp, body = get11(port, "/length", "gzip", method="HEAD")
    assert resp.getheader("Content-Encoding") is None and body == b""
    assert resp.getheader("Content-Length") == str(len(BODY))


def test_strong_etag_made_weak(pyvs: tuple[Pyvs, int]) -> None:
    _, port = pyvs
    resp, body = get11(port, "/etag", "gzip")
    assert resp.getheader("ETag") == 'W/"v1"'
    assert gzip.decompress(body) == BODY
    resp, body = get11(port, "/etag", None)
    assert resp.getheader("ETag") == '"v1"'  # uncompressed: the server's validator unchanged


def test_ten_mib_streamed(pyvs: tuple[Pyvs, int]) -> None:
    """A 10 MiB chunked body compressed on the fly, decoded incrementally: pyvs never
    holds the body (it could not: the response head arrives before the server wrote
    more than one chunk)."""
    _, port = pyvs
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/big", headers={"Accept-Encoding": "zstd"})
    resp = conn.getresponse()
    assert resp.getheader("Content-Encoding") == "zstd"
    d = zstandard.ZstdDecompressor().decompressobj()
    piece = text(64 * 1024, seed=3)
    got = hashlib.sha256()
    total = wire = 0
    while True:
        b = resp.read1(65536)
        if not b:
            break
        wire += len(b)
        out = d.decompress(b)
        got.update(out)
        total += len(out)
    assert total == BIG
    assert got.digest() == hashlib.sha256(piece * (BIG // len(piece))).digest()
    assert wire < BIG // 10
    conn.close()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from pyvs.config.loader import load_text

    bad = {
        "level: {gzip: 12}": "level.gzip: expected 1-9, got 12",
        "algorithms: [gzip, lzma]": "algorithms",
        "types: [html]": "expected a media type",
    }
    for fragment, words in bad.items():
        text_cfg = ("listeners: [{name: w, bind: ['127.0.0.1:1'], routes: [{backend: b, compress: {" +
                    fragment.replace(": ", ": ", 1) + "}}]}]\n" +
                    "backends: [{name: b, servers: [{name: s, address: '127.0.0.1:2'}]}]\n")
        with pytest.raises(Exception) as err:
            load_text(text_cfg)
        assert words in str(err.value), str(err.value)

"""Acceleration for HTTP/2 clients (issue 16 with issue 15): compression, the shared
cache and response buffering work on an h2 stream as on an HTTP/1 connection, since
they are stages of the exchange (docs/acceleration.md). Real curl over h2c (prior
knowledge) against two workers; every body compared byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, curl, free_port, heads
from tests.integration.test_compression import text

PAGE = text(100_000, seed=7)
BIG = text(3 * 1024 * 1024, seed=8)


class Origin:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for head in heads(r):
            path = head.split(b" ", 2)[1].decode()
            self.hits[path] = self.hits.get(path, 0) + 1
            body = BIG if path.startswith("/big") else PAGE
            cc = b"public, max-age=60" if path.startswith("/cached") else b"no-store"
            start = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: " + cc + b"\r\n"
            if path.endswith("/chunked"):
                w.write(start + b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 16384):
                    piece = body[i:i + 16384]
                    w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await w.drain()
                w.write(b"0\r\n\r\n")
            else:
                w.write(start + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()


@pytest.fixture(scope="module")
def rig(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Origin]]:
    origin = Origin()
    backend = RawBackend(loop_thread, origin)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{
            "name": "h2", "bind": [f"127.0.0.1:{port}"], "http2": True,
            "routes": [
                {"match": {"path_prefix": "/cached"}, "backend": "be",
                 "compress": {"algorithms": ["br", "gzip"], "types": ["text/*"]},
                 "cache": {"size": "8m", "max_object": "1m"}},
                {"backend": "be", "compress": {"algorithms": ["br", "gzip"], "types": ["text/*"]},
                 "buffer_response": "1m"},
            ],
        }],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    p = Pyvs(cfg, tmp_path_factory.mktemp("accel-h2"), workers=2)
    yield port, origin
    p.stop()
    backend.close()


def h2get(port: int, path: str, *headers: str, tmp: Path) -> tuple[str, bytes]:
    out = tmp / "body"
    args = [a for h in headers for a in ("-H", h)]
    r = curl("--http2-prior-knowledge", "-s", "-D", "-", "-o", str(out), *args, f"http://127.0.0.1:{port}{path}")
    assert r.returncode == 0, r.stderr
    head = r.stdout.decode().lower()
    assert head.startswith("http/2 200"), head
    return head, out.read_bytes()


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("alg", ["gzip", "br"])
def test_compressed_for_an_h2_client(rig: tuple[int, Origin], alg: str, framing: str, tmp_path: Path) -> None:
    port, _ = rig
    path = "/page" if framing == "length" else "/page/chunked"
    head, body = h2get(port, path, f"Accept-Encoding: {alg}", tmp=tmp_path)
    assert f"content-encoding: {alg}" in head and "vary: accept-encoding" in head
    assert "transfer-encoding" not in head  # HTTP/2 has no chunked framing
    plain = gzip.decompress(body) if alg == "gzip" else brotli.decompress(body)
    assert plain == PAGE


def test_curl_compressed_big_body_byte_exact(rig: tuple[int, Origin], tmp_path: Path) -> None:
    port, _ = rig
    r = curl("--http2-prior-knowledge", "--compressed", "-s", "-o", str(tmp_path / "b"),
             "-w", "%{http_version} %{size_download}", f"http://127.0.0.1:{port}/big/chunked")
    assert r.returncode == 0, r.stderr
    version, size = r.stdout.decode().split()
    assert version == "2" and int(size) < len(BIG) // 2  # it came compressed
    assert hashlib.sha256((tmp_path / "b").read_bytes()).digest() == hashlib.sha256(BIG).digest()


def test_shared_cache_serves_h2_clients_on_both_workers(rig: tuple[int, Origin], tmp_path: Path) -> None:
    """The compressed variant stored from one h2 request is a hit for the next ones,
    whichever worker their connection reaches (one fetch per Accept-Encoding)."""
    port, origin = rig
    first_head, first = h2get(port, "/cached/page", "Accept-Encoding: gzip", tmp=tmp_path)
    assert "x-cache: miss" in first_head and gzip.decompress(first) == PAGE
    for _ in range(10):  # a new connection each: both workers see some of them
        head, body = h2get(port, "/cached/page", "Accept-Encoding: gzip", tmp=tmp_path)
        assert "x-cache: hit" in head and "content-encoding: gzip" in head
        assert gzip.decompress(body) == PAGE
    head, body = h2get(port, "/cached/page", "Accept-Encoding: br", tmp=tmp_path)
    assert "x-cache: miss" in head and brotli.decompress(body) == PAGE
    assert origin.hits["/cached/page"] == 2

"""A cacheable 204 through a cache route, on every way the cache answers it.

A 204 has no body and no framing for one (RFC 9110 6.4.1, 8.6): no Transfer-Encoding,
no last-chunk, no Content-Length. The cache stages responses it may store, and
staged responses are presented chunked; a 204 must not be, neither when the server's
204 is recorded (MISS), nor when it is answered from the store (HIT), nor when the
stored 204 answers for a failing server (stale-if-error, whose 503 had a body). Each
check sends a second request on the same connection: stray bytes would be read as
the start of its response.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, free_port, heads


class Origin:
    def __init__(self) -> None:
        self.failing = False

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for head in heads(r):
            path = head.split(b" ", 2)[1]
            if path == b"/other":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: no-store\r\n\r\nother")
            elif self.failing:
                w.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\ndown!")
            else:
                w.write(b"HTTP/1.1 204 No Content\r\nCache-Control: max-age=1, stale-if-error=60\r\n\r\n")
            await w.drain()


@pytest.fixture()
def env(loop_thread: LoopThread, tmp_path: Any) -> Iterator[tuple[int, Origin]]:
    origin = Origin()
    backend = RawBackend(loop_thread, origin.serve)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "be", "cache": {"size": "8m"}}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    yield port, origin
    p.stop()
    backend.close()


def _read_all(s: socket.socket) -> bytes:
    out = bytearray()
    while chunk := s.recv(65536):
        out += chunk
    return bytes(out)


def _204_then_other(port: int) -> bytes:
    """The 204's head, after checking that the next response on the connection follows
    it directly."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: t\r\n\r\nGET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = _read_all(s)
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 204"), data
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\nother"), data  # nothing in between
    low = head.lower()
    assert b"transfer-encoding" not in low and b"content-length" not in low, head
    return low


def test_a_204_recorded_stored_and_served_stale_has_no_body_framing(env: tuple[int, Origin]) -> None:
    port, origin = env
    assert b"x-cache: miss" in _204_then_other(port)
    assert b"x-cache: hit" in _204_then_other(port)
    origin.failing = True
    time.sleep(1.2)  # (the clock is the event: max-age=1 must pass)
    assert b"x-cache: stale" in _204_then_other(port)

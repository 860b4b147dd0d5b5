"""buffer_response and buffer_request end to end (issue 16).

* With ``buffer_response``, a client reading 1 byte per 10 ms does not hold the server
  connection: pyvs reads the whole response into the client's buffer, the server
  connection goes back to the pool (the backend's in-flight count drops to 0 while
  the slow client still reads) and the next request reuses it.
* With ``buffer_request``, a slow upload reaches the server in one burst after the
  client has sent all of it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, free_port, pattern, read_head

# Larger than what the kernel buffers alone absorb (tcp_wmem max 4 MiB on loopback).
BIG = pattern(8 * 1024 * 1024)
UPLOAD = pattern(100 * 1024)


class Server:
    """Keep-alive backend: /big (8 MiB), /small; POST bodies timed from head to last byte."""

    def __init__(self) -> None:
        self.upload_spans: list[float] = []
        self.uploads: list[bytes] = []

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if head.startswith(b"POST"):
                t0 = time.monotonic()
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await r.readexactly(length)
                self.upload_spans.append(time.monotonic() - t0)
                self.uploads.append(body)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif b" /big" in head or b" /plain/big" in head:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
            await w.drain()


@pytest.fixture
def rig(loop_thread: LoopThread, tmp_path: Any) -> Iterator[tuple[Pyvs, int, RawBackend, Server]]:
    srv = Server()
    backend = RawBackend(loop_thread, srv)
    port = free_port()
    cfg = {
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"],
            "routes": [
                {"match": {"path_prefix": "/plain/"}, "backend": "be"},
                {"backend": "be", "buffer_response": "16m", "buffer_request": "1m"},
            ],
        }],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    yield p, port, backend, srv
    p.stop()
    backend.close()


def active(p: Pyvs) -> int:
    """Requests the instance has in flight to backend ``be`` (every worker's report)."""
    st = p.status()
    for b in st.get("backends", []):
        if b["name"] == "be":
            return int(sum(s.get("active", 0) for s in b.get("servers", [])))
    raise AssertionError(f"no backend be in {st}")


def slow_client(port: int, path: str) -> tuple[socket.socket, bytes]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    for _ in range(20):  # 1 byte per 10 ms
        got += s.recv(1)
        time.sleep(0.01)
    assert got.startswith(b"HTTP/1.1 200")
    return s, got


def drain(s: socket.socket, data: bytes) -> bytes:
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < len(BIG):
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data.partition(b"\r\n\r\n")[2]


def test_slow_client_does_not_hold_the_server(rig: tuple[Pyvs, int, RawBackend, Server]) -> None:
    p, port, backend, _ = rig
    s, got = slow_client(port, "/big")
    deadline = time.monotonic() + 20
    while active(p) != 0:  # the response was read whole: the server's request is over
        assert time.monotonic() < deadline, "the server connection is still held by the slow client"
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert c.recv(4096).endswith(b"small")
    assert backend.connections == 1  # the pooled connection served the second request
    assert drain(s, got) == BIG  # and the slow client still gets every byte


def test_without_buffering_the_server_waits(rig: tuple[Pyvs, int, RawBackend, Server]) -> None:
    """The control: the route without buffer_response holds its server while the
    client reads slowly (pyvs stops reading the server at the client's 64 KiB mark)."""
    p, port, _, _ = rig
    s, got = slow_client(port, "/plain/big")
    time.sleep(1.0)  # a negative: nothing to await; generous against a busy machine's stats lag
    assert active(p) == 1
    assert drain(s, got) == BIG


def test_slow_upload_reaches_the_server_whole(rig: tuple[Pyvs, int, RawBackend, Server]) -> None:
    _, port, _, srv = rig
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(UPLOAD))
        t0 = time.monotonic()
        for i in range(0, len(UPLOAD), 2048):  # 50 pieces, 10 ms apart: ~0.5 s
            c.sendall(UPLOAD[i:i + 2048])
            time.sleep(0.01)
        client_span = time.monotonic() - t0
        assert c.recv(4096).endswith(b"ok")
    assert srv.uploads == [UPLOAD]
    # The server saw the head only when the body was all there: it read it in a burst.
    assert srv.upload_spans[0] < client_span / 2, (srv.upload_spans, client_span)

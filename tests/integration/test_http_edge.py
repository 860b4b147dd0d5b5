"""Misbehaving servers and lifecycle: replay safety, stale pooled connections,
close-delimited and trailer framing, graceful drain, several workers."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, RawBackend, curl, free_port, read_head


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.bodies: list[bytes] = []


async def _read_request(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await read_head(r)
    body = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            body = await r.readexactly(int(line.split(b":")[1]))
    return head, body


def _proxy(tmp: Path, servers: dict[str, str], **backend: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": n, "address": a} for n, a in servers.items()], **backend}],
    }
    return Pyvs(cfg, tmp), port


@pytest.fixture()
def lt(loop_thread: LoopThread) -> LoopThread:
    return loop_thread


def test_post_is_never_replayed(lt: LoopThread, tmp_path: Path) -> None:
    seen = Counter()

    async def swallow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        _, body = await _read_request(r)
        seen.requests += 1
        seen.bodies.append(body)
        # close without answering: the server may or may not have acted on it

    raw = RawBackend(lt, swallow)
    other = RawBackend(lt, swallow)
    pyvs, port = _proxy(tmp_path, {"s1": raw.address, "s2": other.address}, retries=3)
    try:
        res = curl("-i", "-X", "POST", "--data-binary", "pay=1", f"http://127.0.0.1:{port}/buy")
        assert res.stdout.startswith(b"HTTP/1.1 502 ")
        assert seen.requests == 1 and seen.bodies == [b"pay=1"]
    finally:
        pyvs.stop()
        raw.close()
        other.close()


def test_idempotent_get_is_retried_when_a_pooled_connection_dies(lt: LoopThread, tmp_path: Path) -> None:
    seen = Counter()

    async def one_then_die(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Answer the first request with keep-alive, then close when the next one arrives:
        # the race a proxy meets when a server's keep-alive timeout expires.
        await _read_request(r)
        seen.requests += 1
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await _read_request(r)
        seen.requests += 1

    raw = RawBackend(lt, one_then_die)
    pyvs, port = _proxy(tmp_path, {"s1": raw.address})
    try:
        for _ in range(3):
            res = curl(f"http://127.0.0.1:{port}/x")
            assert res.returncode == 0 and res.stdout == b"ok"
        assert raw.connections >= 2
        st = pyvs.wait_status(lambda s: s["totals"]["retries"] >= 1)
        assert st["totals"]["responses_5xx"] == 0
    finally:
        pyvs.stop()
        raw.close()


def test_close_delimited_response_becomes_chunked_for_http11(lt: LoopThread, tmp_path: Path) -> None:
    async def old_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(5):
            w.write(b"line %d\n" % i)
            await w.drain()

    raw = RawBackend(lt, old_server)
    pyvs, port = _proxy(tmp_path, {"s1": raw.address})
    try:
        res = curl("-i", "--raw", f"http://127.0.0.1:{port}/")
        head, _, body = res.stdout.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert body.endswith(b"0\r\n\r\n")
        res = curl(f"http://127.0.0.1:{port}/")
        assert res.returncode == 0 and res.stdout == b"".join(b"line %d\n" % i for i in range(5))
        res = curl("-0", "-i", f"http://127.0.0.1:{port}/")  # HTTP/1.0 client: close-delimited
        assert b"Connection: close" in res.stdout and res.stdout.endswith(b"line 4\n")
    finally:
        pyvs.stop()
        raw.close()


def test_trailers_are_passed_through(lt: LoopThread, tmp_path: Path) -> None:
    async def with_trailers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(r)
            except asyncio.IncompleteReadError:
                return
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                    b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
            await w.drain()

    raw = RawBackend(lt, with_trailers)
    pyvs, port = _proxy(tmp_path, {"s1": raw.address})
    try:
        res = curl("--raw", f"http://127.0.0.1:{port}/")
        assert res.stdout == b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
    finally:
        pyvs.stop()
        raw.close()


def test_garbage_from_server_is_502(lt: LoopThread, tmp_path: Path) -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await w.drain()

    raw = RawBackend(lt, garbage)
    pyvs, port = _proxy(tmp_path, {"s1": raw.address})
    try:
        res = curl("-i", f"http://127.0.0.1:{port}/")
        assert res.stdout.startswith(b"HTTP/1.1 502 ")
    finally:
        pyvs.stop()
        raw.close()


@pytest.fixture()
def slow_backend(lt: LoopThread) -> Iterator[Backend]:
    b = Backend(lt, "slow")
    yield b
    b.close()


def test_sigterm_drains_in_flight_requests_with_two_workers(slow_backend: Backend, tmp_path: Path) -> None:
    pyvs, port = _proxy(tmp_path, {"s1": slow_backend.address})
    # _proxy starts one worker; start a two-worker instance instead.
    pyvs.stop()
    port = free_port()
    cfg = {
        "global": {"workers": 2, "grace": "10s"},
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "s1", "address": slow_backend.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path)
    st = pyvs.status()
    assert len({w["pid"] for w in st["workers"]}) == 2 and all(w["ready"] for w in st["workers"])
    results: list[Any] = []

    def slow_request() -> None:
        results.append(curl(f"http://127.0.0.1:{port}/slow?delay=1.5", timeout=30))

    threads = [threading.Thread(target=slow_request) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while slow_backend.requests < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slow_backend.requests == 4
    pyvs.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert [r.returncode for r in results] == [0] * 4
    assert all(r.stdout == b"slow slow" for r in results)
    assert pyvs.proc.wait(15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    pyvs.stop()


def test_accept_proxy_on_http_listener_takes_the_client_from_the_header(
    slow_backend: Backend, tmp_path: Path
) -> None:
    from pyvs.l4.proxyproto import build

    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b", "accept_proxy": True}],
        "backends": [{"name": "b", "servers": [{"name": "s1", "address": slow_backend.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path)
    try:
        for version in ("v1", "v2"):
            hdr = build(version, ("203.0.113.7", 40000), ("127.0.0.1", port))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(hdr + b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
            assert out.startswith(b"HTTP/1.1 200")
            assert slow_backend.last_headers["X-Forwarded-For"] == "203.0.113.7"
        # Without the header, the connection is closed unanswered.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
    finally:
        pyvs.stop()

"""Test harness: real pyvs processes, real backend servers, real clients.

* :class:`LoopThread` runs an asyncio loop in a thread so backends live in the test
  process while tests stay plain synchronous functions driving curl or sockets.
* :class:`Backend` is an aiohttp server with endpoints for every framing case.
* :class:`RawBackend` answers with whatever a handler coroutine writes (for
  misbehaving servers: close-delimited, dying, never answering).
* :class:`Pyvs` starts ``pyvs run -c FILE`` as a subprocess and waits until its admin
  endpoint reports every worker ready.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes so truncation or reordering shows."""
    block = hashlib.sha256(b"pyvs").digest() * 2048  # 64 KiB
    reps, rest = divmod(size, len(block))
    return block * reps + block[:rest]


class Backend:
    """An aiohttp test server; counts requests and distinct TCP connections."""

    def __init__(self, lt: LoopThread, name: str) -> None:
        self.lt = lt
        self.name = name
        self.port = free_port()
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.last_headers: dict[str, str] = {}
        self.seen_headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        lt.run(self._start())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _note(self, request: web.Request) -> None:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add((peer[0], peer[1]))
        self.last_headers = dict(request.headers)
        self.seen_headers.append(self.last_headers)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        r = app.router
        r.add_route("*", "/name", self.h_name)
        r.add_route("*", "/headers", self.h_headers)
        r.add_route("*", "/upload", self.h_upload)
        r.add_get("/big", self.h_big)
        r.add_get("/chunked", self.h_chunked)
        r.add_get("/slow", self.h_slow)
        r.add_get("/status/{code}", self.h_status)
        r.add_get("/die", self.h_die)
        r.add_get("/die-chunked", self.h_die)
        r.add_get("/ws", self.h_ws)
        r.add_get("/trailers", self.h_name)
        r.add_route("*", "/{tail:.*}", self.h_name)  # any other path: answers with the name
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def h_name(self, request: web.Request) -> web.Response:
        self._note(request)
        await request.read()
        return web.Response(text=self.name, headers={"X-Server": self.name})

    async def h_headers(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response(dict(request.headers))

    async def h_upload(self, request: web.Request) -> web.Response:
        self._note(request)
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"length": n, "sha256": h.hexdigest(), "server": self.name})

    async def h_big(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(body=pattern(int(request.query["size"])), content_type="application/octet-stream")

    async def h_chunked(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        data = pattern(size)
        for i in range(0, size, 100_000):
            await resp.write(data[i : i + 100_000])
        await resp.write_eof()
        return resp

    async def h_slow(self, request: web.Request) -> web.Response:
        self._note(request)
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text="slow " + self.name)

    async def h_status(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def h_die(self, request: web.Request) -> web.StreamResponse:
        """Send 100 kB of a response, then drop the connection: /die announces 1 MB
        with Content-Length, /die-chunked is chunked."""
        self._note(request)
        if request.path == "/die":
            resp = web.StreamResponse(headers={"Content-Length": "1000000"})
        else:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(pattern(100_000))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def h_ws(self, request: web.Request) -> web.WebSocketResponse:
        self._note(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    def close(self) -> None:
        if self.runner is not None:
            self.lt.run(self.runner.cleanup())
            self.runner = None


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A TCP server whose every connection is handled by ``handler``."""

    def __init__(self, lt: LoopThread, handler: Handler) -> None:
        self.lt = lt
        self.handler = handler
        self.port = free_port()
        self.connections = 0
        self.server: asyncio.Server | None = None
        lt.run(self._start())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _start(self) -> None:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            finally:
                w.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", self.port)

    def close(self) -> None:
        if self.server is not None:
            srv = self.server
            self.server = None

            async def stop() -> None:
                srv.close()

            self.lt.run(stop())


async def read_head(r: asyncio.StreamReader) -> bytes:
    """Read one request head from a raw backend connection."""
    return await r.readuntil(b"\r\n\r\n")


async def heads(r: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The request heads of a raw backend connection, until the client closes it."""
    while True:
        try:
            yield await read_head(r)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


class Pyvs:
    """A pyvs process started from a config dict."""

    def __init__(self, config: dict[str, Any], tmp: Path, *, workers: int = 1) -> None:
        config.setdefault("global", {}).setdefault("workers", workers)
        config["global"].setdefault("stats_interval", "100ms")
        self.admin_port = free_port()
        config.setdefault("admin", {"listen": f"127.0.0.1:{self.admin_port}"})
        self.config = config
        self.path = tmp / f"pyvs-{self.admin_port}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"pyvs-{self.admin_port}.log"
        self._logf = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyvs.cli", "run", "-c", str(self.path)],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pyvs exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                st = self.status()
                if st["workers"] and all(w["ready"] for w in st["workers"]):
                    return
            except (OSError, ValueError, KeyError):
                pass  # not up yet, or another process answered on that port (free_port raced)
            time.sleep(0.05)
        raise RuntimeError(f"pyvs not ready in {timeout}s:\n{self.log.read_text()}")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def wait_status(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5) -> dict[str, Any]:
        """Poll /status until ``pred`` holds (counters arrive every stats_interval)."""
        deadline = time.monotonic() + timeout
        st = self.status()
        while not pred(st):
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched: {json.dumps(st['totals'])}")
            time.sleep(0.05)
            st = self.status()
        return st

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run curl (never through a proxy from the environment)."""
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout - 5), *args],
        capture_output=True, timeout=timeout, check=False,
    )


def raw_exchange(port: int, data: bytes, *, timeout: float = 5, until_close: bool = True) -> bytes:
    """Send ``data`` on a new connection and read until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if not until_close:
                    break
        except TimeoutError:
            if until_close:
                raise
        return b"".join(chunks)

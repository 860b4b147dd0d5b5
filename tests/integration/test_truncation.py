"""A response that breaks off must never look complete (issue 13).

A server's response is cut three ways -- the server process is killed, the server
resets the connection, the server stops sending until the server timeout -- for three
server framings (chunked, Content-Length, delimited by the close) and three clients
(HTTP/1.0, HTTP/1.1 keep-alive, HTTP/1.1 with ``Connection: close``). Every time the
client must see an error: curl exits non-zero. A client whose response pyvs ends by
closing (HTTP/1.0, for a chunked or unframed server response) cannot see the gap in
the framing, so pyvs resets the connection (RST): on the raw socket, ``recv`` raises
ConnectionResetError instead of returning b"". A Content-Length keeps its gap visible
to any client; an HTTP/1.1 client of a chunked response never gets the last chunk.

(A server killed in the middle of a body delimited by the close is not in the
matrix: its FIN is the end of that body, for pyvs as for any client.)
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, curl, free_port, read_head

HEADS = {
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n wor",
    b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello wor",
    b"/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello wor",
}
CLIENTS = {
    "http10": ["-0"],
    "http11": [],
    "http11-close": ["-H", "Connection: close"],
}

# The killed server: answers one request with a cut response, then SIGKILLs itself.
KILLED_SERVER = r"""
import os, signal, socket, sys
heads = eval(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
c, _ = s.accept()
buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(65536)
path = buf.split(b" ", 2)[1]
c.sendall(heads[path])
print("sent", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _path_of(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


@pytest.fixture()
def lt(loop_thread: LoopThread) -> LoopThread:
    return loop_thread


def _reset(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def _cut_then_reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    head = await read_head(r)
    w.write(HEADS[_path_of(head)])
    await w.drain()
    _reset(w)


async def _cut_then_stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    head = await read_head(r)
    w.write(HEADS[_path_of(head)])
    await w.drain()
    try:
        await r.read()  # until pyvs gives up on this server (its server timeout)
    except ConnectionError:
        pass


def _proxy(tmp: Path, address: str, **backend: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": address}], **backend}],
    }
    return Pyvs(cfg, tmp), port


class Killed:
    """A server process per request, killed (SIGKILL) after the cut response."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_SERVER, str(self.port), repr(HEADS)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def reap(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture()
def killed() -> Iterator[Killed]:
    k = Killed()
    yield k
    k.reap()


def _assert_cut_visible(path: str, got: bytes, end: str) -> None:
    """What an HTTP/1.0 client got shows the cut: short of its Content-Length, or reset."""
    assert got.startswith(b"HTTP/1.1 200 OK") and b"hello" in got, got
    if path == "/length":
        assert b"Content-Length: 100\r\n" in got and len(got.partition(b"\r\n\r\n")[2]) < 100
    else:
        assert end == "reset", (got, end)


def _raw_request(port: int, request: bytes) -> tuple[bytes, str]:
    """Send ``request`` and read until the connection ends: (bytes, "reset" | "eof")."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request)
        while True:
            try:
                data = c.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            if not data:
                return got, "eof"
            got += data


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("path", ["/chunked", "/length"])
def test_killed_server_mid_body(killed: Killed, tmp_path: Path, path: str, client: str) -> None:
    pyvs, port = _proxy(tmp_path, f"127.0.0.1:{killed.port}", retries=0)
    try:
        killed.start()
        res = curl("-i", *CLIENTS[client], f"http://127.0.0.1:{port}{path}")
        assert res.returncode != 0, res.stdout
        assert res.stdout.startswith(b"HTTP/1.1 200 OK") and b"hello" in res.stdout
        assert not res.stdout.endswith(b"0\r\n\r\n")
        killed.reap()
        killed.start()  # raw: HTTP/1.0 gets a reset, never a clean end
        got, end = _raw_request(port, b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
        _assert_cut_visible(path, got, end)
    finally:
        pyvs.stop()


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("path", ["/chunked", "/length", "/close"])
def test_server_reset_mid_body(lt: LoopThread, tmp_path: Path, path: str, client: str) -> None:
    raw = RawBackend(lt, _cut_then_reset)
    pyvs, port = _proxy(tmp_path, raw.address, retries=0)
    try:
        res = curl("-i", *CLIENTS[client], f"http://127.0.0.1:{port}{path}")
        assert res.returncode != 0, res.stdout
        assert res.stdout.startswith(b"HTTP/1.1 200 OK") and b"hello" in res.stdout
        got, end = _raw_request(port, b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
        _assert_cut_visible(path, got, end)
    finally:
        pyvs.stop()
        raw.close()


@pytest.mark.parametrize("path", ["/chunked", "/length", "/close"])
def test_server_timeout_mid_body(lt: LoopThread, tmp_path: Path, path: str) -> None:
    raw = RawBackend(lt, _cut_then_stall)
    pyvs, port = _proxy(tmp_path, raw.address, retries=0, timeouts={"server": "300ms"})
    try:
        for client in sorted(CLIENTS):
            res = curl("-i", *CLIENTS[client], f"http://127.0.0.1:{port}{path}")
            assert res.returncode != 0, (client, res.stdout)
            assert res.stdout.startswith(b"HTTP/1.1 200 OK") and b"hello" in res.stdout
        got, end = _raw_request(port, b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
        _assert_cut_visible(path, got, end)
    finally:
        pyvs.stop()
        raw.close()


def test_chunked_keepalive_client_never_gets_the_terminator(lt: LoopThread, tmp_path: Path) -> None:
    raw = RawBackend(lt, _cut_then_reset)
    pyvs, port = _proxy(tmp_path, raw.address, retries=0)
    try:
        got, _ = _raw_request(port, b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in got and got.endswith(b"6\r\n wor"), got
        got, _ = _raw_request(port, b"GET /close HTTP/1.1\r\nHost: a\r\n\r\n")  # chunked by pyvs
        assert b"Transfer-Encoding: chunked" in got and b"hello wor" in got and not got.endswith(b"0\r\n\r\n")
    finally:
        pyvs.stop()
        raw.close()


def test_whole_responses_still_end_cleanly(lt: LoopThread, tmp_path: Path) -> None:
    """The reset is for cut responses only: a whole close-delimited or chunked
    response to an HTTP/1.0 client ends with a FIN."""

    async def whole(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await read_head(r)
        if _path_of(head) == b"/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello")
        await w.drain()

    raw = RawBackend(lt, whole)
    pyvs, port = _proxy(tmp_path, raw.address)
    try:
        for path in (b"/chunked", b"/close"):
            got, end = _raw_request(port, b"GET " + path + b" HTTP/1.0\r\n\r\n")
            assert got.endswith(b"\r\n\r\nhello") and end == "eof", (got, end)
            res = curl("-0", f"http://127.0.0.1:{port}{path.decode()}")
            assert res.returncode == 0 and res.stdout == b"hello"
    finally:
        pyvs.stop()
        raw.close()

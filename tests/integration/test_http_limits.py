"""Limits and strictness at the edge (issue 13, docs/security.md): response transfer
codings, heads that can never complete, max_headers, max_body, max_client_connections."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, RawBackend, curl, free_port, read_head


@pytest.fixture()
def lt(loop_thread: LoopThread) -> LoopThread:
    return loop_thread


def _proxy(tmp: Path, address: str, *, listener: dict[str, Any] | None = None) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b", **(listener or {})}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": address}]}],
    }
    return Pyvs(cfg, tmp), port


def _exchange(port: int, data: bytes, *, timeout: float = 5) -> tuple[bytes, str]:
    """Send ``data``; read until the connection ends: (bytes, "eof" | "reset").
    ``timeout`` is far below the listener's request timeout: an answer that waits for
    it fails the test."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            if not chunk:
                return got, "eof"
            got += chunk


# ------------------------------------------------------------ transfer codings
CODED = {
    b"/gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n",
    b"/gzip-close": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nGZIP",
    b"/xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n",
    b"/chunked-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nGZIP",
}


async def _coded(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    head = await read_head(r)
    w.write(CODED[head.split(b" ", 2)[1]])
    await w.drain()


def test_transfer_codings_are_kept_or_refused(lt: LoopThread, tmp_path: Path) -> None:
    raw = RawBackend(lt, _coded)
    pyvs, port = _proxy(tmp_path, raw.address)
    try:
        # HTTP/1.1: the codings reach the client as the server applied them.
        got, _ = _exchange(port, b"GET /gzip-chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert b"\r\nTransfer-Encoding: gzip, chunked\r\n" in got and got.endswith(b"\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n")
        # Final coding not chunked: delimited by the server's close; pyvs chunks it on top.
        got, _ = _exchange(port, b"GET /gzip-close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert b"\r\nTransfer-Encoding: gzip, chunked\r\n" in got and got.endswith(b"\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n")
        # HTTP/1.0 cannot be sent Transfer-Encoding, and pyvs does not decode gzip: 502.
        for path in (b"/gzip-chunked", b"/gzip-close"):
            got, _ = _exchange(port, b"GET " + path + b" HTTP/1.0\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 502 "), got
        # Unknown codings, chunked not last: 502 for every client.
        for path in (b"/xchunked", b"/chunked-gzip"):
            for version in (b"1.0", b"1.1"):
                got, _ = _exchange(port, b"GET " + path + b" HTTP/" + version + b"\r\nHost: a\r\n\r\n")
                assert got.startswith(b"HTTP/1.1 502 "), (path, got)
    finally:
        pyvs.stop()
        raw.close()


# ------------------------------------------------------- heads that never complete
@pytest.mark.parametrize(
    "head",
    [b"GET /\n", b"GET /\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\r\nHost: a\n\n",
     b"GET / HTTP/1.0\n\n"],
)
def test_bare_lf_and_http09_get_400_at_once(lt: LoopThread, tmp_path: Path, head: bytes) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address)
    try:
        got, end = _exchange(port, head)  # the request timeout is 30 s; the socket's 5 s
        assert got.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in got and end == "eof", got
        assert backend.requests == 0
    finally:
        pyvs.stop()
        backend.close()


# ------------------------------------------------------------------- limits
def test_max_headers(lt: LoopThread, tmp_path: Path) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address, listener={"max_headers": 20})
    try:
        def head(n: int) -> bytes:
            fields = b"".join(b"X-F%d: v\r\n" % i for i in range(n - 2))  # + Host, Connection
            return b"GET /name HTTP/1.1\r\nHost: a\r\n" + fields + b"Connection: close\r\n\r\n"

        got, _ = _exchange(port, head(20))
        assert got.startswith(b"HTTP/1.1 200 "), got
        got, end = _exchange(port, head(21))
        assert got.startswith(b"HTTP/1.1 431 ") and end == "eof", got
        assert backend.requests == 1
    finally:
        pyvs.stop()
        backend.close()


def test_max_headers_default_is_100(lt: LoopThread, tmp_path: Path) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address)
    try:
        fields = [f"X-F{i}: v" for i in range(97)]  # curl adds Host, User-Agent, Accept
        ok = curl(*[a for f in fields for a in ("-H", f)], "-o", "/dev/null", "-w", "%{http_code}",
                  f"http://127.0.0.1:{port}/name")
        assert ok.stdout == b"200"  # 100 fields
        too_many = curl(*[a for f in [*fields, "X-Last: v"] for a in ("-H", f)], "-o", "/dev/null",
                        "-w", "%{http_code}", f"http://127.0.0.1:{port}/name")
        assert too_many.stdout == b"431"
    finally:
        pyvs.stop()
        backend.close()


def test_max_body_content_length(lt: LoopThread, tmp_path: Path) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address, listener={"max_body": "1k"})
    try:
        got, _ = _exchange(port, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n"
                                 b"Connection: close\r\n\r\n" + b"x" * 1024)
        assert got.startswith(b"HTTP/1.1 200 "), got
        # Refused from the head, before any server is contacted and before the body is sent.
        got, end = _exchange(port, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n"
                                   b"Expect: 100-continue\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in got and end == "eof", got
        assert backend.requests == 1
        res = curl("-w", "%{http_code}", "-o", "/dev/null", "--data-binary", "x" * 5000,
                   f"http://127.0.0.1:{port}/upload")
        assert res.stdout == b"413"
    finally:
        pyvs.stop()
        backend.close()


def test_a_client_still_sending_its_body_is_not_reset(lt: LoopThread, tmp_path: Path) -> None:
    """No Expect: 100-continue: a head refused with 413 while the body is on its way.
    pyvs answers, half-closes (FIN) and reads and discards what the client still
    sends (lingering close), so a client that writes on gets no reset that could
    destroy the answer in flight; it closes once the client has sent everything."""
    import socket

    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address, listener={"max_body": "1k"})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n")
            got = b""
            while chunk := c.recv(65536):  # the answer, then pyvs's FIN
                got += chunk
            assert got.startswith(b"HTTP/1.1 413 "), got[:80]
            c.sendall(b"x" * 1048576)  # the body goes on: read and discarded, not refused
            c.shutdown(socket.SHUT_WR)
            assert c.recv(65536) == b""  # pyvs closes after the client's FIN: no reset
        assert backend.requests == 0
    finally:
        pyvs.stop()
        backend.close()


def test_max_body_chunked(lt: LoopThread, tmp_path: Path) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address, listener={"max_body": "1k"})
    try:
        ok = b"200\r\n" + b"x" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n"
        got, _ = _exchange(port, b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                 b"Connection: close\r\n\r\n" + ok)
        assert got.startswith(b"HTTP/1.1 200 "), got
        over = b"200\r\n" + b"x" * 512 + b"\r\n" + b"201\r\n" + b"y" * 513 + b"\r\n0\r\n\r\n"
        got, _ = _exchange(port, b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + over)
        assert got.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in got, got
    finally:
        pyvs.stop()
        backend.close()


def test_max_body_chunked_after_the_response_began_resets(lt: LoopThread, tmp_path: Path) -> None:
    async def early(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n")
        await w.drain()
        try:
            await r.read()
        except ConnectionError:
            pass

    raw = RawBackend(lt, early)
    pyvs, port = _proxy(tmp_path, raw.address, listener={"max_body": "1k"})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n")
            got = b""
            while not got.endswith(b"early\r\n"):
                got += c.recv(65536)
            c.sendall(b"800\r\n" + b"y" * 2048 + b"\r\n")
            try:  # the response is cut: never its last chunk
                while chunk := c.recv(65536):
                    got += chunk
            except ConnectionResetError:
                pass
            assert got.endswith(b"early\r\n"), got
    finally:
        pyvs.stop()
        raw.close()


def test_max_client_connections(lt: LoopThread, tmp_path: Path) -> None:
    backend = Backend(lt, "b")
    pyvs, port = _proxy(tmp_path, backend.address, listener={"max_client_connections": 2})
    get = b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n"

    def answered(c: socket.socket) -> bytes:
        c.sendall(get)
        return c.recv(65536)

    try:
        c1 = socket.create_connection(("127.0.0.1", port), timeout=5)
        c2 = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert answered(c1).startswith(b"HTTP/1.1 200 ") and answered(c2).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c3:
            try:
                c3.sendall(get)
                assert c3.recv(65536) == b""  # closed at accept, nothing read
            except ConnectionResetError:
                pass
        c1.close()
        assert answered(c2).startswith(b"HTTP/1.1 200 ")  # c1's close was seen meanwhile
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c4:
            assert answered(c4).startswith(b"HTTP/1.1 200 ")
        c2.close()
    finally:
        pyvs.stop()
        backend.close()

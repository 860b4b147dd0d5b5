"""Review of the HTTP/1.1 engine: attacks and edge cases (smuggling, pipelining,
timeouts, backpressure, connection reuse, replay safety).

Tests marked ``xfail(strict=True)`` reproduce a bug found in review: each one must
start passing (and lose its marker) when the bug is fixed. The plain tests pin down
behaviour that was checked and is correct.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, RawBackend, curl, free_port, raw_exchange, read_head


# ----------------------------------------------------------------- helpers
class Recorder:
    """A keep-alive HTTP/1.1 server that records every request it parses.

    It frames request bodies by Content-Length only (like a server that trusts the
    proxy in front of it), answers ``200 ok`` with Content-Length, and records the
    request line, the head and the body of each request, and every connection."""

    def __init__(self, lt: LoopThread, *, answer: bytes | None = None) -> None:
        self.lines: list[bytes] = []
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.answer = answer or b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.raw = RawBackend(lt, self._serve)

    @property
    def address(self) -> str:
        return self.raw.address

    @property
    def connections(self) -> int:
        return self.raw.connections

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.lines.append(head.split(b"\r\n", 1)[0])
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.bodies.append(await r.readexactly(length) if length else b"")
            w.write(self.answer)
            await w.drain()

    def close(self) -> None:
        self.raw.close()


def _cfg(port: int, servers: list[str], *, listener: dict[str, Any] | None = None,
         backend: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b", **(listener or {})}],
        "backends": [{
            "name": "b",
            "servers": [{"name": f"s{i}", "address": a} for i, a in enumerate(servers)],
            **(backend or {}),
        }],
    }


def _start(tmp: Path, servers: list[str], **kw: Any) -> tuple[Pyvs, int]:
    port = free_port()
    return Pyvs(_cfg(port, servers, **kw), tmp), port


def _talk(port: int, data: bytes, *, wait: float) -> tuple[bytes, bool]:
    """Send ``data``; read for up to ``wait`` seconds. Returns (bytes, closed_by_peer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        return _read_for(s, wait)


def _read_for(s: socket.socket, wait: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not b:
            return b"".join(chunks), True
        chunks.append(b)


def _read_response(s: socket.socket, timeout: float = 5) -> bytes:
    """One Content-Length framed response."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        assert b, f"closed after {buf!r}"
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        b = s.recv(65536)
        assert b, "closed mid-body"
        body += b
    return head + b"\r\n\r\n" + body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _quiet(handler: Handler) -> Handler:
    """A raw handler for which a connection pyvs drops is not an error."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    return run


class Hold:
    """Keeps a raw handler waiting until the test releases it (so no handler is still
    pending when the session's event loop stops)."""

    def __init__(self) -> None:
        self.released = False

    async def wait(self) -> None:
        while not self.released:
            await asyncio.sleep(0.05)


@pytest.fixture()
def lt(loop_thread: LoopThread) -> LoopThread:
    return loop_thread


@pytest.fixture()
def rec(lt: LoopThread) -> Iterator[Recorder]:
    r = Recorder(lt)
    yield r
    r.close()


# ------------------------------------------------------- request smuggling
def test_connection_cannot_nominate_content_length(rec: Recorder, tmp_path: Path) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        head = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close, content-length\r\n\r\n"
        out, _ = _talk(port, head % len(smuggled) + smuggled, wait=2)
        deadline = time.monotonic() + 0.5
        while len(rec.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Either refused, or forwarded with its framing intact: never a second request.
        assert all(b"/smuggled" not in line for line in rec.lines), rec.lines
        if out.startswith(b"HTTP/1.1 200"):
            assert rec.bodies == [smuggled]
    finally:
        pyvs.stop()


def test_connection_cannot_nominate_host(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        out, _ = _talk(port, b"GET /a HTTP/1.1\r\nHost: shop.example\r\nConnection: close, host\r\n\r\n", wait=2)
        assert out.startswith(b"HTTP/1.1 "), out
        if rec.heads:
            assert b"\r\nHost: shop.example\r\n" in rec.heads[0], rec.heads[0]
    finally:
        pyvs.stop()


def test_request_line_with_two_spaces_gets_400(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        for bad in (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n"):
            out, _ = _talk(port, bad, wait=2)
            assert out.startswith(b"HTTP/1.1 400 "), out
        assert rec.lines == []
    finally:
        pyvs.stop()


def test_bad_pipelined_request_after_a_good_one_gets_400(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        out, closed = _talk(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET  /b HTTP/1.1\r\nHost: x\r\n\r\n", wait=1)
        assert out.startswith(b"HTTP/1.1 200 OK"), out
        assert b"HTTP/1.1 400 " in out and closed, out
    finally:
        pyvs.stop()


# ------------------------------------------------------------- timeouts
def test_bad_pipelined_request_after_504_does_not_stop_timeouts(lt: LoopThread, tmp_path: Path) -> None:
    slow = Backend(lt, "slow")
    pyvs, port = _start(tmp_path, [slow.address], listener={"timeouts": {"request": "500ms", "client": "5s"}},
                        backend={"timeouts": {"server": "300ms"}})
    try:
        pipelined = b"GET /slow?delay=1.5 HTTP/1.1\r\nHost: x\r\n\r\nGET  / HTTP/1.1\r\nHost: x\r\n\r\n"
        out, _ = _talk(port, pipelined, wait=0.7)
        assert out.startswith(b"HTTP/1.1 504 "), out
        # Another client that never finishes its head must still get its 408.
        out, closed = _talk(port, b"GET / HTTP/1.1\r\nHost: x\r\n", wait=2)
        assert out.startswith(b"HTTP/1.1 408 ") and closed, out
    finally:
        pyvs.stop()
        slow.close()


def test_partial_pipelined_head_is_still_timed_out(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address], listener={"timeouts": {"request": "500ms", "client": "1s"}})
    try:
        out, closed = _talk(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo", wait=2)
        assert out.startswith(b"HTTP/1.1 200 OK"), out
        assert closed, "a started but unfinished head is never timed out (slowloris)"
    finally:
        pyvs.stop()


def test_server_timeout_is_per_read_not_per_response(lt: LoopThread, tmp_path: Path) -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):  # one byte every 250 ms: 2 s in all, never 1 s of silence
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.25)

    raw = RawBackend(lt, _quiet(trickle))
    pyvs, port = _start(tmp_path, [raw.address], backend={"timeouts": {"server": "1s"}})
    try:
        res = curl(f"http://127.0.0.1:{port}/")
        assert res.returncode == 0 and res.stdout == b"x" * 8, (res.returncode, res.stdout)
    finally:
        pyvs.stop()
        raw.close()


def test_tunnel_survives_client_backpressure(lt: LoopThread, tmp_path: Path) -> None:
    """After 101 there is no server timeout; a client that once read slowly must not
    re-arm one (resume_writing sets the server deadline even in TUNNEL)."""
    big = 8 * 1024 * 1024

    async def ws(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")
        w.write(b"d" * big)  # more than the client reads at once: the proxy must pause
        await w.drain()
        while True:
            data = await r.read(65536)
            if not data:
                return
            w.write(data)
            await w.drain()

    raw = RawBackend(lt, _quiet(ws))
    pyvs, port = _start(tmp_path, [raw.address], backend={"timeouts": {"server": "500ms"}})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x-test\r\nConnection: upgrade\r\n\r\n")
            time.sleep(0.5)  # not reading: the proxy's client buffer fills (pause_writing)
            got = 0
            while got < big:
                b = s.recv(1 << 20)
                assert b
                got += len(b)
            time.sleep(0.9)  # quiet for longer than the server timeout
            s.sendall(b"ping")
            data, closed = _read_for(s, 1)
            assert data.endswith(b"ping") and not closed, (data[-20:], closed)
    finally:
        pyvs.stop()
        raw.close()


# ------------------------------------------------------------ pipelining
def test_many_pipelined_requests_answered_by_pyvs_itself(rec: Recorder, tmp_path: Path) -> None:
    """503 (no server) is answered synchronously; each pipelined request must not
    add a level of recursion (_send_error -> _exchange_done -> _heads -> _start ...)."""
    port = free_port()
    cfg = _cfg(port, [rec.address])
    cfg["backends"][0]["servers"][0]["weight"] = 0
    pyvs = Pyvs(cfg, tmp_path)
    try:
        n = 2000
        reqs = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * n + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        out, closed = _talk(port, reqs, wait=5)
        assert closed and out.count(b"HTTP/1.1 503 ") == n + 1, out.count(b"HTTP/1.1 503 ")
    finally:
        pyvs.stop()


def test_absolute_form_target_is_routed_by_its_path(lt: LoopThread, tmp_path: Path) -> None:
    api, web = Backend(lt, "api"), Backend(lt, "web")
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"],
                       "routes": [{"match": {"path_prefix": "/name"}, "backend": "api"}, {"backend": "web"}]}],
        "backends": [{"name": "api", "servers": [{"name": "a", "address": api.address}]},
                     {"name": "web", "servers": [{"name": "w", "address": web.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path)
    try:
        out = raw_exchange(port, b"GET /name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.endswith(b"api")
        # RFC 9112 3.2.2: the absolute form's path (and authority) is what the server acts on;
        # routing must use the same path, or path rules can be bypassed.
        out = raw_exchange(port, b"GET http://x/name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ") or out.endswith(b"api"), out[-40:]
    finally:
        pyvs.stop()
        api.close()
        web.close()


# ---------------------------------------------------------- backpressure
def test_client_that_does_not_read_bounds_memory_across_pipelined_responses(lt: LoopThread, tmp_path: Path) -> None:
    """The client stops reading. Once its socket is full, pyvs must stop reading from
    the server, also for the next pipelined request (pause_writing came while no
    server connection was bound, and the next one is bound without being paused)."""
    small, huge = 100_000, 64 * 1024 * 1024
    sent = {"huge": 0}

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if b"/huge" in head:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % huge)
                block = b"h" * (1 << 20)
                for _ in range(huge >> 20):
                    w.write(block)
                    await w.drain()
                    sent["huge"] += len(block)
            else:  # one write per response: pyvs reads it with one data_received
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % small + b"s" * small)
                await w.drain()

    raw = RawBackend(lt, _quiet(serve))
    pyvs, port = _start(tmp_path, [raw.address])
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 80 + b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.5)  # never read
            assert sent["huge"] < huge // 2, f"pyvs read {sent['huge']} bytes the client never took"
    finally:
        pyvs.stop()
        raw.close()


def test_keepalive_continues_after_504_on_a_write_blocked_server(lt: LoopThread, tmp_path: Path) -> None:
    """The server connection was write-blocked when it was dropped (here: 504); the
    client connection stays open but pyvs never reads from it again
    (``up_write_blocked`` is never cleared)."""
    first = {"done": False}
    hold = Hold()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not first["done"]:
            first["done"] = True
            await hold.wait()  # read nothing, answer nothing
            return
        while True:
            try:
                await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    raw = RawBackend(lt, _quiet(serve))
    # A large head (allowed by max_header_size) is enough to fill the socket to the server.
    pyvs, port = _start(tmp_path, [raw.address],
                        listener={"max_header_size": "16m", "timeouts": {"client": "1s"}},
                        backend={"timeouts": {"server": "500ms"}})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (8 << 20) + b"\r\n\r\n")
            resp = _read_response(s)
            assert resp.startswith(b"HTTP/1.1 504 ") and b"Connection: close" not in resp, resp
            s.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            out, closed = _read_for(s, 2)
            assert out.startswith(b"HTTP/1.1 200 OK"), (out, closed)
    finally:
        hold.released = True
        pyvs.stop()
        raw.close()


def test_server_that_stops_reading_the_body_is_a_server_timeout(lt: LoopThread, tmp_path: Path) -> None:
    hold = Hold()

    async def deaf(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)
        await hold.wait()  # never reads the body

    raw = RawBackend(lt, _quiet(deaf))
    pyvs, port = _start(tmp_path, [raw.address], listener={"timeouts": {"client": "2s"}},
                        backend={"timeouts": {"server": "500ms"}})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            size = 32 << 20
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            s.setblocking(False)
            block = b"p" * (1 << 20)
            t0 = time.monotonic()
            out = b""
            while time.monotonic() - t0 < 3 and not out:
                try:
                    s.send(block)
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:
                    pass  # pyvs closed after answering: read the answer
                try:
                    out = s.recv(65536)
                except BlockingIOError:
                    pass
                except OSError:
                    break  # reset before the answer could be read (no lingering close)
            # The client sent as fast as it could: the stall is the server's.
            assert out.startswith(b"HTTP/1.1 504 "), (out[:40], round(time.monotonic() - t0, 1))
    finally:
        hold.released = True
        pyvs.stop()
        raw.close()


# ------------------------------------------------ behaviour checked correct
class Shared:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.rec = Recorder(lt)
        self.port = free_port()
        self.pyvs = Pyvs(_cfg(self.port, [self.rec.address]), tmp)

    def close(self) -> None:
        self.pyvs.stop()
        self.rec.close()


@pytest.fixture(scope="module")
def shared(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    sh = Shared(loop_thread, tmp_path_factory.mktemp("review"))
    yield sh
    sh.close()


_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
_CHUNKED = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # obs-fold, whitespace before the colon, bare LF in the head
        (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"GET /a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400),
        # CL.TE, TE.TE and codings pyvs does not implement
        (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
        # chunked body: bare LF, data longer than announced, a 17-digit size, a CR in an extension
        (_CHUNKED + b"3\nabc\r\n0\r\n\r\n", 400),
        (_CHUNKED + b"3\r\nabcd\r\n0\r\n\r\n", 400),
        (_CHUNKED + b"1" + b"0" * 15 + b"3\r\nabc\r\n0\r\n\r\n", 400),
        (_CHUNKED + b"3;a=\"\r\"\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ],
)
def test_ambiguous_requests_are_refused_and_close(shared: Shared, raw: bytes, status: int) -> None:
    out = raw_exchange(shared.port, raw + _SMUGGLED)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:60]
    assert b"Connection: close" in out.split(b"\r\n\r\n")[0]
    assert all(b"/smuggled" not in line for line in shared.rec.lines)


def test_chunk_extensions_and_trailers_pass_through(lt: LoopThread, tmp_path: Path) -> None:
    body = b"3;name=\"v\"\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"
    got: list[bytes] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await read_head(r)
        got.append(head)
        got.append(await r.readexactly(len(body)))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()

    raw = RawBackend(lt, _quiet(serve))
    pyvs, port = _start(tmp_path, [raw.address])
    try:
        head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        out = raw_exchange(port, head + body)
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"ok")
        assert b"\r\nTransfer-Encoding: chunked\r\n" in got[0] and got[1] == body
    finally:
        pyvs.stop()
        raw.close()


def test_refused_upgrade_does_not_open_a_tunnel(shared: Shared) -> None:
    """The server answers 200 instead of 101: what the client sent after its upgrade
    request must not reach the server as a request."""
    out, closed = _talk(shared.port, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                        + _SMUGGLED, wait=3)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out and closed
    assert out.count(b"HTTP/1.1 ") == 1
    assert all(b"/smuggled" not in line for line in shared.rec.lines)


def test_bytes_after_a_response_are_never_served_and_spoil_the_connection(lt: LoopThread, tmp_path: Path) -> None:
    async def chatty(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            await w.drain()

    raw = RawBackend(lt, _quiet(chatty))
    pyvs, port = _start(tmp_path, [raw.address])
    try:
        for _ in range(3):
            res = curl(f"http://127.0.0.1:{port}/")
            assert res.returncode == 0 and res.stdout == b"ok"
        assert raw.connections == 3
    finally:
        pyvs.stop()
        raw.close()


def test_idempotent_retries_are_bounded(lt: LoopThread, tmp_path: Path) -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)  # then close without a byte

    raw = RawBackend(lt, _quiet(hang_up))
    pyvs, port = _start(tmp_path, [raw.address], backend={"retries": 2})
    try:
        res = curl("-i", f"http://127.0.0.1:{port}/")
        assert res.stdout.startswith(b"HTTP/1.1 502 ")
        assert raw.connections == 3  # the first attempt and two retries
        res = curl("-i", "-X", "DELETE", "-d", "x", f"http://127.0.0.1:{port}/")
        assert res.stdout.startswith(b"HTTP/1.1 502 ") and raw.connections == 4  # a body: never replayed
    finally:
        pyvs.stop()
        raw.close()


def test_unsafe_request_reuses_only_a_recently_idle_connection(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        assert curl(f"http://127.0.0.1:{port}/1").stdout == b"ok"
        assert curl("-d", "x", f"http://127.0.0.1:{port}/2").stdout == b"ok"
        assert rec.connections == 1  # idle < 2 s: reused even for a POST
        time.sleep(2.2)
        assert curl("-d", "x", f"http://127.0.0.1:{port}/3").stdout == b"ok"
        assert rec.connections == 2  # idle > 2 s: a POST gets a fresh connection
        assert curl(f"http://127.0.0.1:{port}/4").stdout == b"ok"
        assert rec.connections == 2  # a GET takes any pooled connection
    finally:
        pyvs.stop()


def test_post_after_idle_time_pools_its_fresh_connection_in_a_full_pool(rec: Recorder, tmp_path: Path) -> None:
    """A pool full of connections too old for a POST: the POST's fresh connection
    replaces the oldest one, so the next POST reuses it instead of opening another."""
    pyvs, port = _start(tmp_path, [rec.address], backend={"pool": {"max_idle": 1}})
    try:
        assert curl(f"http://127.0.0.1:{port}/1").stdout == b"ok"
        time.sleep(2.2)
        assert curl("-d", "x", f"http://127.0.0.1:{port}/2").stdout == b"ok"
        assert rec.connections == 2  # idle > 2 s: a fresh connection, pooled in place of the old one
        assert curl("-d", "x", f"http://127.0.0.1:{port}/3").stdout == b"ok"
        assert rec.connections == 2
    finally:
        pyvs.stop()


def test_http10_client_gets_chunked_response_decoded_and_closed(lt: LoopThread, tmp_path: Path) -> None:
    b = Backend(lt, "b")
    pyvs, port = _start(tmp_path, [b.address])
    try:
        out = raw_exchange(port, b"GET /chunked?size=250000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"Connection: close" in head and b"Transfer-Encoding" not in head
        assert len(body) == 250000
    finally:
        pyvs.stop()
        b.close()


def test_client_leaving_mid_response_does_not_pool_the_server_connection(lt: LoopThread, tmp_path: Path) -> None:
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if b"/long" in head:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"l" * 1000)
                await w.drain()
                await asyncio.sleep(1)
                w.write(b"l" * 999_000)
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    raw = RawBackend(lt, _quiet(serve))
    pyvs, port = _start(tmp_path, [raw.address])
    try:
        out, _ = _talk(port, b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n", wait=0.3)
        assert out.startswith(b"HTTP/1.1 200 OK")
        for _ in range(2):
            res = curl(f"http://127.0.0.1:{port}/short")
            assert res.returncode == 0 and res.stdout == b"ok"
        assert raw.connections == 2
    finally:
        pyvs.stop()
        raw.close()

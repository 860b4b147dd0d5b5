"""User-space TCP balancing (``mode: tcp``) end to end: real pyvs, real sockets.

The backends are :class:`L4Backend` servers in the test process. Each connection
starts with one command line, so one server covers every case:

* ``SEND n``  -- write n bytes of :func:`pattern` and close;
* ``SINK``    -- read until EOF, then answer ``<length> <sha256>`` and close
  (the reply comes *after* the client's FIN: the half-close case);
* ``ECHO``    -- echo until EOF;
* ``NAME``    -- answer the server's name and close;
* ``DIE n``   -- write n bytes, then reset the connection (a server dying mid-stream);
* ``HOLD``    -- answer ``held`` and keep the connection until the client closes.

Every connection's first bytes are kept in ``heads`` (for the PROXY protocol tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvs.l4 import proxyproto
from tests.integration.harness import LoopThread, Pyvs, free_port, pattern

MIB = 1 << 20


class L4Backend:
    """A TCP server speaking the command protocol of the module docstring."""

    def __init__(self, lt: LoopThread, name: str, *, proxy_header: bool = False) -> None:
        self.lt = lt
        self.name = name
        self.port = free_port()
        self.proxy_header = proxy_header
        self.connections = 0
        self.active = 0
        self.heads: list[proxyproto.ProxyHeader] = []
        self.peers: list[str] = []
        self.server: asyncio.Server | None = None
        lt.run(self._start())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, limit=1 << 20)

    async def _read_proxy(self, r: asyncio.StreamReader) -> None:
        buf = b""
        while True:
            hdr = proxyproto.parse(buf)
            if hdr is not None:
                assert hdr.consumed == len(buf), "payload arrived glued to the header: read it byte by byte"
                self.heads.append(hdr)
                return
            buf += await r.readexactly(1)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        peer = w.get_extra_info("peername")
        self.peers.append(peer[0] if peer else "")
        try:
            if self.proxy_header:
                await self._read_proxy(r)
            line = (await r.readline()).strip().split()
            if not line:
                return
            cmd, args = line[0], line[1:]
            if cmd == b"SEND":
                data = pattern(int(args[0]))
                for i in range(0, len(data), MIB):
                    w.write(data[i : i + MIB])
                    await w.drain()
            elif cmd == b"SINK":
                h = hashlib.sha256()
                n = 0
                while chunk := await r.read(MIB):
                    h.update(chunk)
                    n += len(chunk)
                w.write(f"{n} {h.hexdigest()}\n".encode())
                await w.drain()
            elif cmd == b"ECHO":
                while chunk := await r.read(MIB):
                    w.write(chunk)
                    await w.drain()
            elif cmd == b"NAME":
                w.write(self.name.encode())
            elif cmd == b"DIE":
                w.write(pattern(int(args[0])))
                await w.drain()
                sock = w.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()  # with linger 0: a reset, as from a crashed host
                return
            elif cmd == b"HOLD":
                w.write(b"held\n")
                await w.drain()
                await r.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            w.close()

    def close(self) -> None:
        srv = self.server
        if srv is not None:
            self.server = None

            async def stop() -> None:
                srv.close()

            self.lt.run(stop())


def tcp_config(backends: list[L4Backend | str], *, listener: dict[str, Any] | None = None,
               backend: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """A config with one tcp listener on a free port; a ``str`` names a dead server."""
    port = free_port()
    servers = [
        {"name": b, "address": free_addr()} if isinstance(b, str) else {"name": b.name, "address": b.address}
        for b in backends
    ]
    cfg = {
        "listeners": [{"name": "l4", "mode": "tcp", "bind": [f"127.0.0.1:{port}"], "backend": "be",
                       **(listener or {})}],
        "backends": [{"name": "be", "servers": servers, **(backend or {})}],
    }
    return cfg, port


def free_addr() -> str:
    """An address where nothing listens (a dead server)."""
    return f"127.0.0.1:{free_port()}"


def connect(port: int, timeout: float = 10, source: str | None = None) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(MIB):
        chunks.append(chunk)
    return b"".join(chunks)


def ask(port: int, line: bytes, **kw: Any) -> bytes:
    with connect(port, **kw) as s:
        s.sendall(line)
        return read_all(s)


def closed_by_peer(s: socket.socket) -> bool:
    """True when the peer closed or reset the connection (no data arrives)."""
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def reset_on_arrival(port: int) -> bool:
    """Connect and expect pyvs to close at once. The reset can beat connect() itself:
    Python's connect with a timeout polls and then reads SO_ERROR, which by then may
    hold the ECONNRESET of the connection pyvs accepted and reset."""
    try:
        s = connect(port)
    except ConnectionResetError:
        return True
    with s:
        return closed_by_peer(s)


@pytest.fixture
def backends(loop_thread: LoopThread) -> Iterator[list[L4Backend]]:
    made = [L4Backend(loop_thread, "s1"), L4Backend(loop_thread, "s2")]
    yield made
    for b in made:
        b.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Pyvs]]:
    procs: list[Pyvs] = []
    yield procs
    for p in procs:
        p.stop()


def start(procs: list[Pyvs], cfg: dict[str, Any], tmp: Path, workers: int = 1) -> Pyvs:
    p = Pyvs(cfg, tmp, workers=workers)
    procs.append(p)
    return p


def totals(p: Pyvs) -> dict[str, Any]:
    st: dict[str, Any] = p.status()["totals"]
    return st


# ---------------------------------------------------------------- forwarding


def test_round_robin_over_two_servers(backends: list[L4Backend], started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config(list(backends))
    start(started, cfg, tmp_path)
    names = [ask(port, b"NAME\n") for _ in range(6)]
    assert sorted(names) == [b"s1"] * 3 + [b"s2"] * 3


def test_download_100_mib_byte_exact(backends: list[L4Backend], started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config(backends[:1])
    p = start(started, cfg, tmp_path)
    size = 100 * MIB
    h = hashlib.sha256()
    n = 0
    with connect(port) as s:
        s.sendall(f"SEND {size}\n".encode())
        buf = bytearray(MIB)
        while got := s.recv_into(buf):
            h.update(memoryview(buf)[:got])
            n += got
    assert n == size
    assert h.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    p.wait_status(lambda st: st["totals"]["l4_bytes_out"] >= size)


def test_upload_100_mib_and_half_close(backends: list[L4Backend], started: list[Pyvs], tmp_path: Path) -> None:
    """The client shuts its write side after the upload and still gets the answer,
    which the server sends only after it saw that FIN."""
    cfg, port = tcp_config(backends[:1])
    start(started, cfg, tmp_path)
    size = 100 * MIB
    data = pattern(size)
    with connect(port) as s:
        s.sendall(b"SINK\n")
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = read_all(s)
    assert reply == f"{size} {hashlib.sha256(data).hexdigest()}\n".encode()


def test_echo_both_ways_at_once(backends: list[L4Backend], started: list[Pyvs], tmp_path: Path,
                                loop_thread: LoopThread) -> None:
    cfg, port = tcp_config(backends[:1])
    start(started, cfg, tmp_path)
    size = 8 * MIB
    data = pattern(size)

    async def run() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ECHO\n")

        async def send() -> None:
            for i in range(0, size, 256 * 1024):
                w.write(data[i : i + 256 * 1024])
                await w.drain()
            w.write_eof()

        task = asyncio.ensure_future(send())
        got = await r.read(-1)
        await task
        w.close()
        return got

    assert loop_thread.run(run(), timeout=60) == data


def test_server_dies_mid_stream_closes_the_client(loop_thread: LoopThread, started: list[Pyvs],
                                                   tmp_path: Path) -> None:
    dying = L4Backend(loop_thread, "dying")
    try:
        cfg, port = tcp_config([dying])
        start(started, cfg, tmp_path)
        got = 0
        reset = False
        with connect(port) as s:
            s.sendall(b"DIE 300000\n")
            try:
                while chunk := s.recv(MIB):
                    got += len(chunk)
            except ConnectionResetError:
                reset = True
        # pyvs passes the server's reset on: the client never mistakes the cut for an end.
        assert reset
        assert got <= 300000
    finally:
        dying.close()


def test_connect_failure_retries_another_server(backends: list[L4Backend], started: list[Pyvs],
                                                tmp_path: Path) -> None:
    cfg, port = tcp_config(["dead", backends[0]])
    p = start(started, cfg, tmp_path)
    assert [ask(port, b"NAME\n") for _ in range(4)] == [b"s1"] * 4
    st = p.wait_status(lambda st: st["totals"]["retries"] >= 2)
    dead = next(s for s in st["backends"][0]["servers"] if s["name"] == "dead")
    assert dead["connect_failures"] >= 2


def test_source_hashing_keeps_each_client_on_one_server(backends: list[L4Backend], started: list[Pyvs],
                                                         tmp_path: Path) -> None:
    cfg, port = tcp_config(list(backends), backend={"balance": "source"})
    start(started, cfg, tmp_path)
    seen: dict[str, set[bytes]] = {}
    for i in range(2, 12):
        src = f"127.0.0.{i}"
        seen[src] = {ask(port, b"NAME\n", source=src) for _ in range(3)}
    assert all(len(names) == 1 for names in seen.values()), seen
    assert set().union(*seen.values()) == {b"s1", b"s2"}  # and different clients do spread


def test_health_check_takes_a_dead_server_out(backends: list[L4Backend], started: list[Pyvs],
                                              tmp_path: Path) -> None:
    cfg, port = tcp_config(["dead", backends[0]], backend={
        "health": {"type": "tcp", "interval": "100ms", "timeout": "100ms", "rise": 1, "fall": 1},
        "retries": 0,
    })
    p = start(started, cfg, tmp_path)
    p.wait_status(lambda st: any(s["name"] == "dead" and s.get("eligible") is False
                                 for s in st["backends"][0]["servers"]))
    assert [ask(port, b"NAME\n") for _ in range(4)] == [b"s1"] * 4


# ---------------------------------------------------------------- limits and timeouts


def test_server_maxconn_queues_then_serves(backends: list[L4Backend], started: list[Pyvs],
                                           tmp_path: Path) -> None:
    b = backends[0]
    cfg, port = tcp_config([b], listener={"queue": {"size": 1, "timeout": "10s"}})
    cfg["backends"][0]["servers"][0]["maxconn"] = 1
    p = start(started, cfg, tmp_path)
    first = connect(port)
    first.sendall(b"HOLD\n")
    assert first.recv(100) == b"held\n"
    second = connect(port)  # waits in the queue: its NAME must not be answered yet
    second.sendall(b"NAME\n")
    p.wait_status(lambda st: st["totals"]["l4_queued"] == 1)
    assert reset_on_arrival(port)  # the queue (size 1) is full: closed at once
    assert b.connections == 1
    first.close()  # frees the slot: the queued connection goes through
    assert read_all(second) == b"s1"
    second.close()
    st = p.wait_status(lambda st: st["totals"]["l4_queue_full"] == 1)
    assert st["totals"]["l4_queue_timeouts"] == 0


def test_queue_timeout_closes_the_waiting_client(backends: list[L4Backend], started: list[Pyvs],
                                                 tmp_path: Path) -> None:
    cfg, port = tcp_config(backends[:1], listener={"maxconn": 1, "queue": {"size": 4, "timeout": "300ms"}})
    p = start(started, cfg, tmp_path)
    with connect(port) as first:
        first.sendall(b"HOLD\n")
        assert first.recv(100) == b"held\n"
        with connect(port) as waiting:
            waiting.sendall(b"NAME\n")
            with pytest.raises(ConnectionResetError):
                waiting.recv(100)  # reset when its queue time is over
        p.wait_status(lambda st: st["totals"]["l4_queue_timeouts"] == 1)
    assert backends[0].connections == 1


def test_idle_connections_are_closed(backends: list[L4Backend], started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config(backends[:1], listener={"tcp": {"idle_timeout": "300ms"}})
    p = start(started, cfg, tmp_path)
    with connect(port) as s:
        s.sendall(b"HOLD\n")
        assert s.recv(100) == b"held\n"
        with pytest.raises(ConnectionResetError):
            s.recv(100)  # nothing moves: pyvs resets both sides
    p.wait_status(lambda st: st["totals"]["l4_idle_timeouts"] == 1)


def test_clients_aborting_bulk_transfers_do_not_poison_later_ones(backends: list[L4Backend], started: list[Pyvs],
                                                                   tmp_path: Path) -> None:
    """Resets in the middle of spliced transfers must not leave bytes in pooled pipes
    (a reused dirty pipe once stalled the next connection)."""
    cfg, port = tcp_config(backends[:1])
    start(started, cfg, tmp_path)
    for _ in range(6):
        s = connect(port)
        s.sendall(f"SEND {50 * MIB}\n".encode())
        got = 0
        while got < 2 * MIB:
            got += len(s.recv(MIB))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # reset with data in flight
    size = 20 * MIB
    for _ in range(3):
        data = ask(port, f"SEND {size}\n".encode())
        assert len(data) == size and data == pattern(size)

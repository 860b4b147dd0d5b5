"""A closed client connection is freed by reference counting, not by the cycle collector.

A connection and its exchange point at each other; left as a cycle, every short
connection waits for the collector, which took ~15 % of a worker's user CPU under
``Connection: close`` clients (``Exchange.detach``). Each test runs with the collector
off and checks, by counting live objects, that the pair is gone as soon as the last
outside reference is dropped: on each way a connection can end.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from pyvs.config.loader import load_text
from pyvs.l7.h1conn import H1Connection
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn
from tests.unit.test_frontend_short_path import Loop, Transport

CFG = """
listeners:
  - name: web
    bind: ["127.0.0.1:1"]
    routes:
      - {match: {path_prefix: /filtered}, backend: be, response_headers: {set: {X-Route: f}}}
      - {backend: be}
backends:
  - {name: be, retries: 0, servers: [{name: s1, address: "127.0.0.1:2"}]}
"""
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture()
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = WorkerRuntime(load_text(CFG), 0, self.loop)
        self.rt.batch.loop = Loop()  # type: ignore[assignment]
        self.server = Transport()
        self.up = UpstreamConn(self.rt.backends["be"].servers[0], None, self.rt.sweeper)
        self.up.connection_made(self.server)  # type: ignore[arg-type]
        self.rt.backends["be"].servers[0].idle.append(self.up)

    def connection(self) -> tuple[H1Connection, Transport]:
        client = Transport(("127.0.0.1", 5555))
        fe = H1Connection(self.rt.listeners[0])
        fe.connection_made(client)  # type: ignore[arg-type]
        return fe, client


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.loop.close()


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)  # (slotted classes take no weak references)


def _counts(fe: H1Connection) -> dict[type, int]:
    """How many connections, exchanges and request views exist, ``fe``'s included."""
    return {k: _live(k) for k in (type(fe), type(fe.ex), type(fe.ex.view))}


def _freed(counts: dict[type, int]) -> None:
    """Called once the test dropped its last reference: ``fe``'s trio is gone already."""
    assert {k: _live(k) for k in counts} == {k: n - 1 for k, n in counts.items()}


@pytest.mark.parametrize("path", ["/", "/filtered"])  # the short path and the general one
def test_answered_then_closed_by_the_client(rig: Rig, no_collector: None, path: str) -> None:
    fe, client = rig.connection()
    fe.data_received(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    rig.up.data_received(OK)
    rig.rt.batch.flush()
    assert any(isinstance(e, bytes) and e.endswith(b"ok") for e in client.events)
    fe.connection_lost(None)
    counts = _counts(fe)
    del fe
    _freed(counts)


def test_connection_close_request_closed_by_pyvs(rig: Rig, no_collector: None) -> None:
    fe, client = rig.connection()
    fe.data_received(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    rig.up.data_received(OK)
    rig.rt.batch.flush()
    assert "close" in client.events
    fe.connection_lost(None)
    counts = _counts(fe)
    del fe
    _freed(counts)


def test_client_gone_while_the_server_answers(rig: Rig, no_collector: None) -> None:
    fe, _ = rig.connection()
    fe.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert fe.ex.up is rig.up  # in flight
    fe.connection_lost(ConnectionResetError())
    counts = _counts(fe)
    del fe
    _freed(counts)
    rig.up.data_received(OK)  # the late answer reaches no one, and nothing breaks


def test_malformed_request_answered_400(rig: Rig, no_collector: None) -> None:
    fe, client = rig.connection()
    fe.data_received(b"GET / HTTP/1.1\r\nHost h\r\n\r\n")
    rig.rt.batch.flush()
    assert any(isinstance(e, bytes) and e.startswith(b"HTTP/1.1 400") for e in client.events)
    fe.connection_lost(None)
    counts = _counts(fe)
    del fe
    _freed(counts)


def test_idle_connection_closed_without_a_request(rig: Rig, no_collector: None) -> None:
    fe, _ = rig.connection()
    fe.connection_lost(None)
    counts = _counts(fe)
    del fe
    _freed(counts)


def test_a_late_callback_reaches_the_departed_client_harmlessly(rig: Rig) -> None:
    """What the exchange still does to its downstream after the close (a server that
    stops reading, a late write) lands on a Departed of its own: flags written, no
    error, and nothing shared with another closed connection's exchange."""
    fe, _ = rig.connection()
    other, _ = rig.connection()
    fe.connection_lost(None)
    other.connection_lost(None)
    ex = fe.ex
    ex.upstream_write_blocked(True)
    assert ex.down.up_write_blocked and not other.ex.down.up_write_blocked
    ex.upstream_write_blocked(False)
    ex.down.deadline = 5.0
    ex.flush_client()
    ex.on_interim(None)  # type: ignore[arg-type]
    assert other.ex.down.deadline == 0.0

class SwitchingTransport(Transport):
    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol


def test_h2c_hand_over_leaves_no_cycle_through_the_h1_connection(no_collector: None) -> None:
    """An h2c client's first connection object (PriorKnowledge) hands over to HTTP/2;
    the HTTP/2 connection keeps its exchange for the client's facts only."""
    from pyvs.h2.detect import PREFACE, PriorKnowledge

    loop = asyncio.new_event_loop()
    try:
        rt = WorkerRuntime(load_text(CFG.replace("bind:", "http2: true\n    bind:")), 0, loop)
        t = SwitchingTransport(("127.0.0.1", 5555))
        h1 = PriorKnowledge(rt.listeners[0])
        h1.connection_made(t)  # type: ignore[arg-type]
        before = _live(PriorKnowledge)
        h1.data_received(PREFACE)
        h2conn = t.protocol
        assert type(h2conn).__name__ == "H2ServerConnection"
        del h1
        assert _live(PriorKnowledge) == before - 1  # freed at once: nothing points back at it
        h2conn.connection_lost(None)  # type: ignore[attr-defined]
    finally:
        loop.close()

TCP_CFG = """
listeners:
  - {name: l4, mode: tcp, bind: ["127.0.0.1:%d"], backend: be}
backends:
  - {name: be, servers: [{name: s1, address: "127.0.0.1:%d"}]}
"""


def test_l4_tcp_session_freed_when_both_sides_end(no_collector: None) -> None:
    """A relayed TCP connection (L4, user space): the session and its two pumps point at
    each other; a closed session must not wait for the collector either."""
    from pyvs.l4.tcp import TcpSession
    from tests.integration.harness import free_port

    async def main() -> None:
        async def echo_once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readexactly(4))
            await w.drain()
            w.close()

        server = await asyncio.start_server(echo_once, "127.0.0.1", 0)
        sport = server.sockets[0].getsockname()[1]
        port = free_port()
        rt = WorkerRuntime(load_text(TCP_CFG % (port, sport)), 0, asyncio.get_running_loop())
        await rt.start()
        before = _live(TcpSession)
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"ping")
            assert await asyncio.wait_for(r.read(), 10) == b"ping"  # to the server's close
            w.close()
        sessions = rt.l4.tcp[0].sessions
        await rt.drain(10)  # returns as soon as the relayed sessions have ended
        assert not sessions
        assert _live(TcpSession) == before
        server.close()
        await server.wait_closed()

    asyncio.run(main())

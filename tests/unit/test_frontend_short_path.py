"""The L7 short paths with fake transports: a response held in the worker's write
batch always reaches the client before anything pyvs writes or does next on that
connection (an error answer, a close)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyvs.config.loader import load_text
from pyvs.l7.h1conn import H1Connection
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn

CFG = """
listeners: [{name: web, bind: ["127.0.0.1:1"], backend: be, timeouts: {client: 60s, request: 5s}}]
backends: [{name: be, servers: [{name: s1, address: "127.0.0.1:2"}]}]
"""
REQ = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Transport:
    """Records writes and the close, in order."""

    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.peer = peer
        self.events: list[bytes | str] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.events.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.events.append(b"".join(data))

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return False


class Loop:
    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, cb: Callable[[], None]) -> None:
        self.ready.append(cb)


ROUTED = """
listeners:
  - name: web
    bind: ["127.0.0.1:1"]
    routes:
      - {match: {host: a.example, path_prefix: /a/}, backend: other}
      - {match: {host: h, path: "~^/$"}, backend: be}
      - {match: {host: h}, backend: be, response_headers: {set: {X-Route: filtered}}}
backends:
  - {name: be, servers: [{name: s1, address: "127.0.0.1:2"}]}
  - {name: other, servers: [{name: o1, address: "127.0.0.1:3"}]}
"""


class Rig:
    def __init__(self, cfg: str = CFG) -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = WorkerRuntime(load_text(cfg), 0, self.loop)
        self.batch_loop = Loop()
        self.rt.batch.loop = self.batch_loop  # type: ignore[assignment]
        self.client = Transport(("127.0.0.1", 5555))
        self.fe = H1Connection(self.rt.listeners[0])
        self.fe.connection_made(self.client)  # type: ignore[arg-type]
        server = self.rt.backends["be"].servers[0]
        self.server_t = Transport()
        self.conn = UpstreamConn(server, None, self.rt.sweeper)
        self.conn.connection_made(self.server_t)  # type: ignore[arg-type]
        server.idle.append(self.conn)

    def exchange_pending(self) -> None:
        """A request and its response through the short paths, the batch not yet run."""
        self.fe.data_received(REQ)
        assert self.server_t.events == []  # the request head waits in the batch too
        self.rt.batch.flush()
        sent = self.server_t.events[0]
        assert isinstance(sent, bytes) and sent.startswith(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1")
        self.conn.data_received(RESP)
        assert self.client.events == [] and len(self.rt.batch.pending) == 1


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.loop.close()


def test_response_leaves_at_the_end_of_the_iteration(rig: Rig) -> None:
    rig.exchange_pending()
    for cb in rig.batch_loop.ready:
        cb()
    assert rig.client.events == [RESP]
    assert rig.rt.stats.requests == 1 and rig.conn in rig.conn.server.idle


def test_bad_request_after_a_batched_response_is_answered_after_it(rig: Rig) -> None:
    rig.exchange_pending()
    rig.fe.data_received(b"NONSENSE\r\n\r\n")
    assert rig.client.events[0] == RESP
    assert isinstance(rig.client.events[1], bytes) and rig.client.events[1].startswith(b"HTTP/1.1 400 ")
    assert rig.client.events[2] == "close"


def test_eof_after_a_batched_response_sends_it_before_closing(rig: Rig) -> None:
    rig.exchange_pending()
    rig.fe.eof_received()  # returns None: the transport closes itself after this
    assert rig.client.events == [RESP]


def test_drain_after_a_batched_response_sends_it_before_closing(rig: Rig) -> None:
    rig.exchange_pending()
    rig.fe.drain()
    assert rig.client.events == [RESP, "close"]


def test_blank_line_after_the_idle_wait_starts_the_request_timeout(rig: Rig) -> None:
    rig.exchange_pending()
    rig.rt.batch.flush()
    now = rig.loop.time()
    assert rig.fe.idle_wait and rig.fe.deadline > now + 30  # idle: the client timeout (60 s)
    rig.fe.data_received(b"\r\n")  # RFC 9112 2.2: ignored, but the request has begun
    assert not rig.fe.idle_wait and rig.fe.deadline <= rig.loop.time() + 5


def test_a_routed_request_without_filters_takes_the_short_paths() -> None:
    """Routing decides the route; an empty chain then keeps both short paths (the
    head and the whole response go through the batch, as without routes)."""
    rig = Rig(ROUTED)
    try:
        assert rig.rt.listeners[0].fixed_route is None  # the router runs
        rig.exchange_pending()
        for cb in rig.batch_loop.ready:
            cb()
        assert rig.client.events == [RESP]
    finally:
        rig.loop.close()


def test_a_route_with_a_response_filter_leaves_the_short_path() -> None:
    rig = Rig(ROUTED)
    try:
        rig.fe.data_received(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        assert rig.server_t.events and rig.rt.batch.pending == []  # written at once: the general path
        rig.conn.data_received(RESP)
        assert rig.client.events == [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Route: filtered\r\n\r\nok"]
    finally:
        rig.loop.close()

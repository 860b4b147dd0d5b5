"""The per-server pool of idle connections: which one is reused, which one is closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pyvs.config.loader import load_text
from pyvs.http.h1 import parse_response_head
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn
from pyvs.upstream.server import ServerState
from tests.unit.persist.rig import Rec

CFG = """
listeners: [{name: web, bind: ["127.0.0.1:1"], backend: be}]
backends: [{name: be, pool: {max_idle: 2}, servers: [{name: s1, address: "127.0.0.1:2"}]}]
"""
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture()
def rt() -> Iterator[WorkerRuntime]:
    loop = asyncio.new_event_loop()
    yield WorkerRuntime(load_text(CFG), 0, loop)
    loop.close()


def _answered(rt: WorkerRuntime) -> tuple[UpstreamConn, Rec]:
    """A connection whose keep-alive response just ended."""
    server = rt.backends["be"].servers[0]
    conn = UpstreamConn(server, None, rt.sweeper)
    t = Rec()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.response = parse_response_head(OK, head_request=False)
    return conn, t


def test_full_pool_closes_its_least_recently_used_connection(rt: WorkerRuntime) -> None:
    server: ServerState = rt.backends["be"].servers[0]
    (a, ta), (b, tb), (c, tc) = _answered(rt), _answered(rt), _answered(rt)
    assert a.release(1.0) and b.release(2.0)
    assert c.release(10.0)  # the pool holds 2: the oldest makes room
    assert server.idle == [b, c] and ta.closed and a.closed and not tb.closed and not tc.closed


def test_unsafe_request_finds_the_fresh_connection_in_a_pool_of_stale_ones(rt: WorkerRuntime) -> None:
    """A POST may only take a connection idle < 2 s. With the pool full of older ones, it
    opens a connection; once that one is released, the next POST takes it."""
    server: ServerState = rt.backends["be"].servers[0]
    (a, _), (b, _), (c, _) = _answered(rt), _answered(rt), _answered(rt)
    a.release(1.0)
    b.release(1.0)
    assert server.take_idle(10.0, 2.0) is None  # both stale: a new connection is opened
    c.release(10.5)
    assert server.take_idle(10.6, 2.0) is c


def test_pool_of_zero_keeps_nothing(rt: WorkerRuntime) -> None:
    server: ServerState = rt.backends["be"].servers[0]
    server.backend.max_idle = 0
    conn, t = _answered(rt)
    assert not conn.release(1.0) and t.closed and server.idle == []

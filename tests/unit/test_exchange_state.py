"""Per-request state of one exchange over a keep-alive connection (fake transports, no
sockets): what one request's route decided must never reach the next request.

Each test is a bug found by review of the connection/exchange split."""

from __future__ import annotations

import asyncio
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
    forwarded: {trusted_proxies: ["10.9.0.0/16"]}
    routes:
      - {match: {path_prefix: /a}, backend: be,
         request_headers: {set: {Host: internal.a, X-Secret: s3cr3t, X-Backend: "%{backend}"}}}
      - {match: {path_prefix: /slow}, backend: be, timeouts: {server: 250ms}}
      - {match: {source: [192.0.2.0/24]}, backend: be, request_headers: {set: {X-Client: "%{client_ip}"}}}
      - {backend: be2, request_headers: {set: {X-Backend: "%{backend}"}}}
backends:
  - {name: be, retries: 0, timeouts: {server: 30s}, servers: [{name: s1, address: "127.0.0.1:2"}]}
  - {name: be2, servers: [{name: s2, address: "127.0.0.1:3"}]}
  - {name: plain, servers: [{name: s3, address: "127.0.0.1:4"}]}
"""
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class PausingTransport(Transport):
    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        super().__init__(peer)
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Rig:
    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = WorkerRuntime(load_text(CFG), 0, self.loop)
        self.rt.batch.loop = Loop()  # type: ignore[assignment]
        self.client = PausingTransport((peer, 5555))
        self.fe = H1Connection(self.rt.listeners[0])
        self.fe.connection_made(self.client)  # type: ignore[arg-type]
        self.server_t: dict[str, Transport] = {}

    def pool(self, backend: str) -> UpstreamConn:
        server = self.rt.backends[backend].servers[0]
        t = self.server_t[backend] = Transport()
        conn = UpstreamConn(server, None, self.rt.sweeper)
        conn.connection_made(t)  # type: ignore[arg-type]
        server.idle.append(conn)
        return conn

    def sent(self, backend: str) -> bytes:
        self.rt.batch.flush()
        return b"".join(e for e in self.server_t[backend].events if isinstance(e, bytes))

    def close(self) -> None:
        task = self.fe.ex.connect_task
        if task is not None:
            task.cancel()
            try:
                self.loop.run_until_complete(task)
            except BaseException:  # the cancelled connect
                pass
        self.loop.close()


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_a_filtered_routes_lines_do_not_follow_the_next_request(rig: Rig) -> None:
    conn = rig.pool("be")
    rig.fe.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"X-Secret: s3cr3t" in rig.sent("be")
    conn.data_received(OK)
    rig.rt.batch.flush()
    # next request: another route, no idle connection there: a new connection is opened
    rig.fe.data_received(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    new = rig.fe.ex.connecting
    task = rig.fe.ex.connect_task
    assert new is not None and task is not None
    t = Transport()
    new.connection_made(t)  # type: ignore[arg-type]  # as if the connect had succeeded
    task.cancel()  # the real connect is not needed any more
    try:
        rig.loop.run_until_complete(task)
    except BaseException:  # the cancelled connect
        pass
    rig.rt.batch.flush()
    head = b"".join(e for e in t.events if isinstance(e, bytes))
    assert b"X-Secret" not in head and b"internal.a" not in head
    assert head.count(b"\r\nHost:") == 1


def test_backend_variable_names_this_requests_backend(rig: Rig) -> None:
    conn = rig.pool("be")
    rig.fe.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"X-Backend: be\r\n" in rig.sent("be")
    conn.data_received(OK)
    rig.pool("be2")
    rig.fe.data_received(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"X-Backend: be2\r\n" in rig.sent("be2")


def test_http10_request_with_a_route_setting_host_sends_one_host(rig: Rig) -> None:
    rig.pool("be")
    rig.fe.data_received(b"GET /a HTTP/1.0\r\n\r\n")
    head = rig.sent("be")
    assert head.count(b"\r\nHost:") == 1 and b"Host: internal.a\r\n" in head


def test_route_server_timeout_bounds_each_body_read(rig: Rig) -> None:
    conn = rig.pool("be")
    rig.fe.data_received(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    now = rig.loop.time()
    assert conn.deadline <= now + 0.3  # the route's 250ms, not the backend's 30s
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert now < conn.deadline <= rig.loop.time() + 0.3  # re-armed with the route's value


def test_an_error_answered_while_a_body_waits_does_not_freeze_the_connection() -> None:
    rig = Rig()
    try:
        rig.fe.data_received(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        assert rig.fe.ex.req_buf == [b"hello"] and rig.client.paused
        task = rig.fe.ex.connect_task
        assert task is not None
        task.cancel()  # the connect times out: 504, the connection stays open
        try:
            rig.loop.run_until_complete(task)
        except BaseException:  # the cancelled connect
            pass
        assert any(isinstance(e, bytes) and e.startswith(b"HTTP/1.1 504 ") for e in rig.client.events)
        assert not rig.fe.closed and rig.fe.ex.req_buf is None and not rig.client.paused
    finally:
        rig.loop.close()


def test_a_trusted_proxy_names_the_client_for_conditions_and_variables() -> None:
    rig = Rig(peer="10.9.1.1")
    try:
        rig.pool("be")
        rig.fe.data_received(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.7, 192.0.2.9\r\n\r\n")
        head = rig.sent("be")
        assert b"X-Client: 192.0.2.9\r\n" in head  # source condition and %{client_ip}: the real client
        assert b"X-Forwarded-For: 198.51.100.7, 192.0.2.9, 10.9.1.1\r\n" in head  # the chain, extended
    finally:
        rig.close()


def test_an_untrusted_peer_cannot_name_another_client(rig: Rig) -> None:
    rig.pool("be2")
    rig.fe.data_received(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.9\r\n\r\n")
    head = rig.sent("be2")
    assert b"X-Client" not in head and b"X-Forwarded-For: 127.0.0.1\r\n" in head


def test_a_small_post_leaves_in_one_write_with_its_body(rig: Rig) -> None:
    """Head and body read together go to the server together: one write, one wake-up
    (the http-post benchmark's request)."""
    conn = rig.pool("be")
    conn.idle_since = rig.loop.time()  # just used: a POST may take it
    rig.fe.data_received(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    writes = [e for e in rig.server_t["be"].events if isinstance(e, bytes)]
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\nhello") and writes[0].startswith(b"POST /a ")
    conn.data_received(OK)
    rig.rt.batch.flush()
    assert b"ok" in b"".join(e for e in rig.client.events if isinstance(e, bytes))


def test_a_head_without_its_body_is_not_held_back(rig: Rig) -> None:
    """Expect: 100-continue (or a body still on its way): the head goes at once, or the
    server would never answer 100 and the client never send its body."""
    conn = rig.pool("be")
    conn.idle_since = rig.loop.time()
    rig.fe.data_received(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert rig.sent("be").startswith(b"POST /a ")
    rig.fe.data_received(b"hello")
    assert rig.sent("be").endswith(b"\r\n\r\nhello")
    assert rig.fe.ex.head_out is None

"""The exchange's way to a server: pick, connection, request head, retries, upstream events.

Theory of operation
-------------------
This is the half of :class:`pyvs.l7.exchange.Exchange` that faces the servers
(Pingora's ``upstream_peer`` and ``upstream_request`` phases): a base class with no
state of its own, so one object per connection still does the whole exchange and the
request path pays no extra hop. It

- picks a server: the backend's persistence when it has one, else the scheduler,
  with a :class:`PickContext` built only for algorithms that read the request;
- takes an idle pooled :class:`UpstreamConn` or opens one (the only task an exchange
  creates), and writes the head: the client's block, the forwarding fields
  (:mod:`pyvs.l7.filters.forwarded`), the filters' lines, the framing fields;
- retries on another server after a failed connect, and after a reused connection
  died before any response byte when the request is replayable (idempotent, no body);
- handles what the connection reports: ready, timeout, lost, backpressure;
- ends the server's part of the exchange in :meth:`server_done`, the one place where
  scheduler bookkeeping (``released``, ``observed``) happens.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, cast

from pyvs.balance.base import PickContext
from pyvs.http.errors import ProtocolError
from pyvs.http.h1 import CHUNKED, RequestHead
from pyvs.l7.context import request_context
from pyvs.tls.client import connect
from pyvs.upstream.connection import Owner, UpstreamConn

if TYPE_CHECKING:
    from pyvs.l7.downstream import Downstream
    from pyvs.l7.listener import ListenerRuntime, RouteRuntime
    from pyvs.l7.queue import BackendQueue
    from pyvs.runtime.batch import WriteBatch
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.upstream.server import BackendRuntime, ServerState, SessionPicker

log = logging.getLogger("pyvs.http")

# A non-idempotent request only reuses a connection idle for less than this: the
# server is very unlikely to be closing it at that very moment.
UNSAFE_REUSE_MAX_IDLE = 2.0


class UpstreamLeg:
    """Server-facing methods of the exchange (see the module docstring). The slots
    are the state both halves use; :class:`Exchange` adds its own and sets all in
    its ``__init__``."""

    __slots__ = (
        "add_lines", "attempts", "backend", "batch", "body_follows", "client_ip", "connect_task", "connecting", "down",
        "fw_plain", "head", "head_out", "last_server", "loop", "lst", "queue_wait", "queued", "req_buf", "resp_started",
        "route", "sent_at", "server", "started", "tried", "trusted", "up", "worker", "xff_line",
    )

    lst: ListenerRuntime
    worker: WorkerRuntime
    loop: asyncio.AbstractEventLoop
    batch: WriteBatch
    down: Downstream
    client_ip: bytes
    trusted: bool
    xff_line: bytes
    fw_plain: bool
    head: RequestHead | None
    route: RouteRuntime | None
    add_lines: list[bytes]
    req_buf: list[bytes] | None
    body_follows: bool  # the downstream hands body bytes over right after start()
    head_out: bytes | None  # the request head, waiting to leave with those bytes
    backend: BackendRuntime | None
    server: ServerState | None
    tried: frozenset[int]
    attempts: int
    started: float
    up: UpstreamConn | None
    connecting: UpstreamConn | None
    connect_task: asyncio.Task[object] | None
    queued: BackendQueue | None
    queue_wait: float
    sent_at: float
    resp_started: bool
    last_server: ServerState | None  # who answered (access log, metrics; reset in Exchange.start)

    held: int  # buffer_request: bytes still to collect before a server is asked (Exchange)

    if TYPE_CHECKING:
        def _response_complete(self, conn: UpstreamConn | None) -> None: ...
        def _hold(self, chunk: bytes) -> None: ...
        def _release(self) -> None: ...

    def owner(self) -> Owner:
        """This exchange, as the owner of its server connections (the Exchange
        subclass implements the response side of :class:`Owner`)."""
        return cast("Owner", self)

    # ------------------------------------------------------------ pick
    def pick_context(self, exclude: frozenset[int], now: float) -> PickContext:
        """The :class:`PickContext` for this request: the request's facts only for
        algorithms that read them (hashing), else a shared empty one."""
        backend = self.backend
        assert backend is not None
        if backend.needs_context:
            ctx = request_context(self.client_ip, self.head, exclude)
        elif exclude:
            ctx = PickContext(exclude=exclude)
        else:
            ctx = backend._empty_ctx
        if backend.observes:
            ctx.now = now
        return ctx

    def _attempt(self, backend: BackendRuntime, head: RequestHead) -> None:
        persist = backend.persist
        if persist is None:
            server = backend.pick(self.pick_context(self.tried, self.started))
        else:
            persist.stuck = False  # set by pick when the request follows its session
            server = persist.pick(self, head, self.tried, self.started)
        down = self.down
        if server is None:
            if self.tried:
                down.send_error(502, close=not down.req_ended)
                return
            backend.no_server += 1
            server = backend.sorry_server
            if server is None:
                sorry = backend.sorry_response
                if sorry is None:
                    down.send_error(503, close=not down.req_ended)
                else:
                    close = not down.req_ended or not head.keep_alive or down.close_after
                    down.send_error(503, close=close, data=sorry[1] if close else sorry[0])
                return
        taken = False
        queue = backend.queue
        if queue is not None and server.index >= 0:
            # Servers with a maxconn (pyvs/l7/queue.py): take a slot now, or wait for one.
            if persist is not None and persist.stuck:
                # A session's request waits for its server (behind the ones already waiting).
                if queue.has_pinned(server) or not server.try_take():
                    self._wait(queue, queue.join_pinned(self, server))
                    return
            elif queue.pending() or not server.try_take():
                other = None
                if not queue.pending():
                    other = queue.room(self.tried | server.index_set) if persist is None \
                        else self._repick(persist, head, server)
                if other is None:
                    self._wait(queue, queue.join(self))
                    return
                server = other
            taken = True
        self.server = server
        self.attempts += 1
        self._use(server, head, taken)

    def _repick(self, persist: SessionPicker, head: RequestHead, full: ServerState) -> ServerState | None:
        """A new session whose server is at its maxconn: balance it again among the
        servers with room, through persistence (so it sticks to the one it gets), its
        slot taken; None when every server is full."""
        exclude = self.tried | full.index_set
        for _ in range(len(full.backend.servers)):
            server = persist.pick(self, head, exclude, self.started)
            if server is None or server.index < 0 or server.index in exclude:
                return None
            if server.try_take():
                return server
            exclude = exclude | server.index_set
        return None

    def _wait(self, queue: BackendQueue, joined: bool) -> None:
        if joined:
            self.queued = queue
        else:  # the queue is full
            self.worker.stats.queue_full += 1
            self.down.send_error(503, close=not self.down.req_ended)

    def dequeued(self, server: ServerState, waited: float) -> None:
        """A slot of ``server`` is ours (taken by the queue): send the request."""
        self.queued = None
        self.queue_wait = waited
        head = self.head
        if head is None:  # cannot happen: finished() leaves the queue
            server.give()
            if server.backend.queue is not None:
                server.backend.queue.kick()
            return
        self.server = server
        self.attempts += 1
        self._use(server, head, True)

    def requeue_elsewhere(self, server: ServerState) -> None:
        """The server a sticky request waited for went down: balance it afresh, as a
        redispatch (persistence moves the session)."""
        self.queued = None
        head, backend = self.head, self.backend
        if head is None or backend is None:
            return
        self.tried = self.tried | server.index_set
        self._attempt(backend, head)

    def queue_failed(self, status: int) -> None:
        """Waited ``queue.timeout`` for a slot: 503, as HAProxy's ``timeout queue``."""
        self.queued = None
        self.worker.stats.queue_timeouts += 1
        self.down.send_error(status, close=not self.down.req_ended)

    def _use(self, server: ServerState, head: RequestHead, taken: bool = False) -> None:
        """Send the request to ``server``: on an idle pooled connection, or a new one.
        The request counts as the server's from here (connect included, as HAProxy
        counts a connection from its assignment): a second pick a moment later,
        in any worker, already sees it."""
        backend = server.backend
        if not taken:
            server.take()
        server.requests += 1
        if server.index >= 0:  # the sorry server is outside the scheduler
            backend.scheduler.taken(server.target)
        if server.idle:
            conn = server.take_idle(self.started, 0.0 if head.replayable else UNSAFE_REUSE_MAX_IDLE)
            if conn is not None:
                server.reused += 1
                conn.owner = self.owner()
                self._bound(conn, head)
                return
        h2 = self.worker.h2_pools.get(server) if self.worker.h2_pools else None  # proto h2 (pyvs/h2/pool.py)
        conn = UpstreamConn(server, self.owner(), self.worker.sweeper) if h2 is None else h2.stream(self.owner())
        rt = self.route
        conn.deadline = self.loop.time() + (rt.connect_timeout if rt is not None else backend.connect_timeout)
        self.worker.sweeper.add(conn)
        self.connecting = conn
        task = self.loop.create_task(connect(self.loop, lambda: conn, server) if h2 is None  # TCP, or TLS (pyvs/tls)
                                     else h2.attach(conn))  # a stream of the server's HTTP/2 connection
        self.connect_task = task
        task.add_done_callback(partial(self._connect_done, conn))

    def _retries(self, backend: BackendRuntime) -> int:
        rt = self.route
        return rt.retries if rt is not None else backend.retries

    def _connect_done(self, conn: UpstreamConn, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            exc: BaseException | None = TimeoutError("connect timeout")
        else:
            exc = task.exception()
        if exc is None:
            return  # upstream_ready already ran from connection_made
        conn.closed = True
        self.worker.sweeper.discard(conn)
        server = conn.server
        server.conn_failures += 1
        self._passive_error(server, "connect")
        if self.connecting is not conn:
            return  # the client went away meanwhile
        self.connecting = None
        self.connect_task = None
        self.server_done()  # the count taken in _use
        head = self.head
        backend = self.backend
        assert head is not None and backend is not None
        log.warning("connect to %s/%s (%s:%d) failed: %s", backend.name, server.name, server.host, server.port,
                    exc or "error")
        if self.attempts <= self._retries(backend):
            self.worker.stats.retries += 1
            self.tried = self.tried | server.index_set
            self._attempt(backend, head)
        else:
            self.down.send_error(504 if isinstance(exc, TimeoutError) else 502, close=not self.down.req_ended)

    def cancel_connect(self) -> None:
        """The client is gone or broke the request: stop a connect under way."""
        if self.queued is not None:
            self.queued.leave(self)
            self.queued = None
        if self.connecting is not None:
            self.connecting = None
            self.server_done()  # the count taken in _use
            if self.connect_task is not None:
                self.connect_task.cancel()

    # ------------------------------------------------- upstream callbacks
    def upstream_ready(self, conn: UpstreamConn) -> None:
        if conn is not self.connecting or self.head is None:
            conn.close()
            return
        self.connecting = None
        self.connect_task = None
        conn.server.opened += 1
        self._bound(conn, self.head)

    def _bound(self, conn: UpstreamConn, head: RequestHead) -> None:
        self.up = conn
        self.sent_at = self.loop.time()  # connected (or pooled): the request goes now
        conn.start_response(head.method == b"HEAD")
        t = conn.transport
        assert t is not None
        down = self.down
        if down.client_write_blocked:
            t.pause_reading()  # the client still is not reading: hold the server too
        if self.fw_plain and not self.add_lines and head.framing != CHUNKED and head.host \
                and head.version == b"1.1" and not head.upgrade:
            # The default forwarding fields for an ordinary request: one join.
            out = b"".join((head.block, self.xff_line, self.lst.xfp_line, b"X-Forwarded-Host: ", head.host,
                            b"\r\n\r\n"))
        else:
            out = self._request_head(head, conn.server)
        buf = self.req_buf
        if buf:
            self.req_buf = None
            t.writelines([out, *buf])
        elif self.body_follows:
            # The client's body bytes came with the head and are handed over next, in
            # this same call: head and body leave in one write (one wake-up of the
            # server, one system call), as HAProxy sends a small POST.
            self.head_out = out
        else:
            t.write(out)
        if down.req_ended:
            self.await_response(conn)
        else:
            conn.deadline = 0.0
            down.deadline = self.loop.time() + self.lst.client_timeout
        if down.reading_paused:
            down.maybe_resume()

    def await_response(self, up: UpstreamConn) -> None:
        """The request is fully written: the server timeout (and the total) run."""
        rt = self.route
        assert rt is not None
        up.deadline = self.loop.time() + rt.server_timeout
        total = rt.total_timeout
        if total:
            up.deadline = min(up.deadline, self.started + total)

    def _request_head(self, head: RequestHead, server: ServerState) -> bytes:
        """The forwarded head on the general path: the client's block, the forwarding
        fields (pyvs.l7.filters.forwarded), the filters' fields, framing."""
        block = head.block
        if head.version == b"1.0":
            block = block.replace(b" HTTP/1.0\r\n", b" HTTP/1.1\r\n", 1)
            if head.host is None and not any(line[:5].lower() == b"host:" for line in self.add_lines):
                block += b"Host: " + server.host_header + b"\r\n"
        parts = [block]
        self.lst.forwarded.add(parts, head, self.client_ip, self.trusted)
        if self.add_lines:
            parts += self.add_lines
        if head.framing == CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if head.upgrade:
            parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def request_body(self, chunk: bytes) -> None:
        """Body bytes from the client: to the server, or kept until one is ready (or
        collected first, with ``buffer_request``: Exchange._hold)."""
        if self.held:
            self._hold(chunk)
            return
        up = self.up
        if up is not None and up.transport is not None:
            out = self.head_out
            if out is not None:  # the head waited for these first body bytes (_bound)
                self.head_out = None
                up.transport.write(out + chunk if len(chunk) <= 16384 else out)
                if len(chunk) <= 16384:
                    return
            up.transport.write(chunk)  # written past the high-water mark too: reading pauses
        else:
            if self.req_buf is None:
                self.req_buf = []
            self.req_buf.append(chunk)
            self.down.pause_reading()

    def request_ended(self) -> None:
        if self.held:  # buffer_request: the whole body is here, ask a server
            self._release()
            return
        up = self.up
        if up is not None:
            out = self.head_out
            if out is not None and up.transport is not None:  # no body byte came after all
                self.head_out = None
                up.transport.write(out)
            self.await_response(up)

    def upstream_write_blocked(self, blocked: bool) -> None:
        down = self.down
        up = self.up
        if blocked:
            down.up_write_blocked = True
            down.pause_reading()
            if up is not None and not down.req_ended and not down.in_tunnel():
                # A server that stops reading the upload is bounded by the server timeout.
                up.deadline = self.loop.time() + self.route.server_timeout  # type: ignore[union-attr]
        else:
            down.up_write_blocked = False
            if up is not None and not down.req_ended and not down.in_tunnel():
                up.deadline = 0.0
            down.maybe_resume()

    def upstream_timeout(self, conn: UpstreamConn) -> None:
        if conn is self.connecting:
            self.worker.stats.connect_timeouts += 1
            if self.connect_task is not None:
                self.connect_task.cancel()  # -> _connect_done: retry elsewhere or 504
            return
        if conn is not self.up:
            conn.close()
            return
        self.worker.stats.server_timeouts += 1
        self._passive_error(conn.server, "timeout")
        log.warning("server %s/%s timed out", conn.server.backend.name, conn.server.name)
        self.up = None
        self.server_done()
        conn.abort()
        down = self.down
        if self.resp_started or down.in_tunnel():
            down.abort()
        else:
            down.send_error(504, close=not down.req_ended)

    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None:
        if conn is self.connecting or conn is not self.up:
            return  # a failed connect is handled by _connect_done
        self.up = None
        self.server_done()
        down = self.down
        if down.in_tunnel():
            down.tunnel_ended()
            return
        if self.resp_started:
            if down.response_until_close() and exc is None:
                self._response_complete(None)
            else:
                self.worker.stats.truncated_responses += 1
                log.warning("server %s/%s closed mid-response", conn.server.backend.name, conn.server.name)
                down.abort()
            return
        head = self.head
        backend = self.backend
        assert head is not None and backend is not None
        if (
            conn.bytes_in == 0
            and head.replayable
            and self.attempts <= self._retries(backend)
            and not isinstance(exc, ProtocolError)
        ):
            # Typically a pooled connection the server closed as we reused it.
            self.worker.stats.retries += 1
            self.tried = self.tried | conn.server.index_set
            self._attempt(backend, head)
            return
        conn.server.responses_5xx += 1
        self._passive_error(conn.server, "5xx")
        if exc is not None:
            log.warning("server %s/%s failed: %s", conn.server.backend.name, conn.server.name, exc)
        down.send_error(502, close=True)

    def server_done(self, ok: bool | None = None) -> None:
        """The exchange with ``self.server`` is over; ``ok`` (answered without a 5xx)
        is passed to latency-aware schedulers when the exchange completed. The one
        place where scheduler bookkeeping ends."""
        self.down.up_write_blocked = False  # that connection's backpressure is gone
        server = self.server
        if server is not None:
            self.server = None
            self.last_server = server
            server.give()
            if server.index >= 0:
                backend = server.backend
                backend.scheduler.released(server.target)
                if backend.queue is not None:
                    backend.queue.kick()  # a slot is free: someone may be waiting for it
                if ok is not None and backend.observes:  # latency-aware algorithms only
                    now = self.loop.time()
                    backend.scheduler.observed(server.target, now - self.started, ok, now)

    def drop_upstream(self) -> None:
        """Abort the server connection of this exchange (the client broke off)."""
        up = self.up
        if up is not None:
            self.up = None
            self.server_done()
            up.abort()

    def _passive_error(self, server: ServerState, kind: str) -> None:
        """Count a failure on live traffic; report the server after too many in a row."""
        backend = server.backend
        if kind in backend.passive_kinds and server.index >= 0:
            if server.passive_failed(backend.passive_threshold):
                self.worker.report_outlier(server, kind)

"""One request/response through the proxy: route, filters, server, retries, response.

Theory of operation
-------------------
An :class:`Exchange` is the part of the proxy that knows nothing of how the client
frames its messages. A client connection (:class:`pyvs.l7.h1conn.H1Connection`
today; an HTTP/2 stream later) owns one exchange for its whole life and hands it
each request head in turn (``start``); the exchange is reset per request, never
reallocated. Its steps, in order:

1. **route**: the listener's compiled router picks the vhost and route
   (:mod:`pyvs.l7.router`); a listener with one unconditional route skips it;
2. **request filters**: the route's chain (:mod:`pyvs.l7.filters`): ACLs, header and
   path rewrites, and the actions that answer by themselves
   (respond, redirect, deny: verdict ``RESPOND``);
3. **pick**: persistence when the backend has it, else the scheduler
   (:meth:`BackendRuntime.pick` with a :class:`PickContext` built only for
   algorithms that read the request);
4. **upstream**: an idle pooled connection or a new one (the only task created);
   the head is the client's own block, the forwarding fields, the filters' fields;
5. **retry** on another server after a failed connect, or after a reused connection
   died before answering when the request is replayable (idempotent, no body);
6. **response filters** on the response head (cookies, header rewrites);
7. the response goes to the *downstream* (the client connection), which decides how
   to frame it for its client;
8. **end**: scheduler bookkeeping (``taken``/``released``/``observed``) and passive
   health are done here and nowhere else; counters; the connection back to the pool.

The short path: a route whose chain is empty, a backend whose scheduler reads
nothing of the request, the default forwarding fields, an idempotent keep-alive
HTTP/1.1 request: ``_short_start`` does steps 3-4 in one call and
``on_whole_response`` steps 7-8 for a response read in one piece. Whether a route
qualifies is decided once at load (``RouteRuntime.short``).

The downstream interface (what an exchange calls on its connection) is
:class:`pyvs.l7.downstream.Downstream`; the upstream interface is the ``Owner`` protocol of
:mod:`pyvs.upstream.connection`, which this class implements.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pyvs.http.h1 import CHUNKED, NO_BODY, RequestHead, ResponseHead, strip_hop_fields
from pyvs.l7.context import VARIABLES, real_client
from pyvs.l7.downstream import Departed, ignore
from pyvs.l7.filters.base import BodyStage, Reply, Verdict, drop_length
from pyvs.l7.request import RequestView
from pyvs.l7.upstream_leg import UpstreamLeg
from pyvs.upstream.connection import DECODE, STAGED_CHUNKED, STAGED_CLOSE, UpstreamConn

if TYPE_CHECKING:
    from pyvs.l7.downstream import Downstream
    from pyvs.l7.listener import ListenerRuntime, RouteRuntime
    from pyvs.l7.queue import BackendQueue
    from pyvs.persist.policy import Sticky
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.http")

# A non-idempotent request only reuses a connection idle for less than this: the
# server is very unlikely to be closing it at that very moment.
UNSAFE_REUSE_MAX_IDLE = 2.0

_NONE_TRIED: frozenset[int] = frozenset()


class Exchange(UpstreamLeg):
    """The request/response in progress on one downstream (see the module docstring)."""

    __slots__ = (
        "cache_status",
        "fast_path",
        "flush_client",
        "head_at",
        "held",
        "held_buf",
        "on_interim",
        "on_tunnel_data",
        "reply",
        "resp_bytes",
        "resp_head",
        "resp_status",
        "rid",
        "stages",
        "stick",
        "upstream_eof",
        "view",
        "wbuf",
    )

    def __init__(self, listener: ListenerRuntime, down: Downstream) -> None:
        self.lst = listener
        self.worker = listener.worker
        self.loop = listener.worker.loop
        self.batch = listener.worker.batch
        self.down = down
        # The upstream connection writes response bytes straight into the
        # downstream's list and calls its framing hooks without a hop through here.
        self.wbuf = down.wbuf
        self.flush_client = down.flush_client
        self.on_interim = down.on_interim
        self.on_tunnel_data = down.on_tunnel_data
        self.upstream_eof = down.upstream_eof
        # The client, set once per connection (socket peer or PROXY header).
        self.client_ip = b""
        self.trusted = False
        self.xff_line = b""
        self.fw_plain = False  # default forwarding fields, client not trusted: the short path
        self.view = RequestView()
        # Per request
        self.head: RequestHead | None = None
        self.route: RouteRuntime | None = None
        self.add_lines: list[bytes] = []
        self.reply: Reply | None = None
        self.rid = b""
        self.cache_status = b""  # HIT, MISS, REVALIDATED, STALE (pyvs/accel/cache.py), for the log
        # When the request went to its server (0.0: with the request's start, as on the short
        # path) and when the response head came back: the log's upstream duration.
        self.sent_at = 0.0
        self.head_at = 0.0
        self.queue_wait = 0.0  # seconds this request waited for a server slot (pyvs/l7/queue.py)
        self.req_buf: list[bytes] | None = None  # body bytes read before a server was ready
        # Set by the downstream before start(): body bytes came with the head and follow
        # at once; the request head then waits in head_out to leave with them (_bound).
        self.body_follows = False
        self.head_out: bytes | None = None
        self.backend: BackendRuntime | None = None
        self.server: ServerState | None = None
        self.tried: frozenset[int] = frozenset()
        self.attempts = 0
        self.started = 0.0
        self.up: UpstreamConn | None = None
        self.connecting: UpstreamConn | None = None
        self.connect_task: asyncio.Task[object] | None = None
        self.queued: BackendQueue | None = None  # waiting for a server slot (pyvs/l7/queue.py)
        self.resp_started = False
        self.resp_status = 0
        # For the end of the request (access log, latency by server): the server that
        # answered, the response head and the bytes forwarded (reset in start).
        self.last_server: ServerState | None = None
        self.resp_head: ResponseHead | None = None
        self.resp_bytes = 0
        # Persistence state of the current exchange (pyvs/persist), for backends that have it.
        self.stick: Sticky | None = None
        # Body stages a response filter attached to the response under way (compression).
        self.stages: list[BodyStage] | None = None
        # buffer_request: the body is collected (up to ``held`` bytes) before a server is asked.
        self.held = 0
        self.held_buf: list[bytes] = []
        # The exchange under way may end in on_whole_response (see there).
        self.fast_path = False

    def set_client(self, ip: str, local_ip: str) -> None:
        """The client's address and what follows from it once per connection."""
        lst = self.lst
        self.client_ip = ip.encode()
        self.trusted = lst.is_trusted(ip)
        self.xff_line = b"X-Forwarded-For: " + self.client_ip + b"\r\n"
        self.fw_plain = lst.fw_default and not self.trusted
        self.view.client_ip = self.client_ip
        self.view.local_ip = local_ip.encode()
        self.view.scheme = lst.scheme

    # ------------------------------------------------------------ start
    def start(self, head: RequestHead, short: bool) -> None:
        """A new request. ``short``: the downstream found it plain enough for the
        short path (bodiless idempotent HTTP/1.1 keep-alive with a Host)."""
        # The resets of _begin, written out: a call here costs ~400 instructions on
        # every request (callgrind, bench/micro.py), the short path's included.
        self.head = head
        self.resp_started = False
        self.req_buf = self.head_out = None
        self.last_server = self.resp_head = None
        self.resp_bytes = 0
        self.rid = self.cache_status = b""
        self.queue_wait = self.sent_at = self.head_at = 0.0
        if self.add_lines:
            self.add_lines = []  # the previous request's filters' lines
        lst = self.lst
        rt = lst.short_route  # one route, no filters, no listener ACL: nothing to decide
        if rt is not None and short and self.fw_plain:
            self.route = rt
            self._short_start(head, rt.backend)  # type: ignore[arg-type]
            return
        down = self.down
        self.started = self.loop.time()  # also for requests answered before a server is asked
        self.route = self.backend = None  # (the end of the request logs them: never the previous one's)
        self.attempts = 0
        if head.method == b"CONNECT":
            down.send_error(405, close=True)
            return
        view = self.view
        view.reset(head)
        if self.trusted:
            view.client_ip = real_client(head.xff, self.client_ip)
        if lst.acl is not None:
            self.reply = None
            if lst.acl.on_request(self) == Verdict.RESPOND:
                self._reply()
                return
        rt = lst.fixed_route
        if rt is None:
            sel = lst.router.select(view)
            if type(sel) is int:
                down.send_error(sel, close=not down.req_ended)
                return
            rt = lst.route_rt[sel.index]  # type: ignore[union-attr]
        self.route = rt
        backend = rt.backend
        if rt.short and short and self.fw_plain:
            assert backend is not None
            self._short_start(head, backend)
            return
        self.backend = backend  # before the filters: %{backend} names this request's
        chain = rt.chain
        if not chain.empty:
            self.reply = None
            for f in chain.request:
                verdict = f.on_request(self)
                if verdict:
                    if verdict == Verdict.RESPOND:
                        self._reply()
                    return  # WAIT: the filter calls resume_request or reply_now later
            if rt.buffer_request and not down.req_ended and backend is not None:
                self.held = rt.buffer_request  # request_body collects; _release goes on
                self.held_buf = []
                return
        if backend is None:
            down.send_error(503, close=not down.req_ended)
            return
        self.fast_path = rt.fast_response and backend.persist is None and head.keep_alive \
            and head.version == b"1.1" and not head.upgrade
        self.tried = _NONE_TRIED
        self.attempts = 0
        self._attempt(backend, head)

    def _begin(self, head: RequestHead) -> None:
        """Nothing of the previous request on this exchange stays (``start`` does the
        same inline: keep the two alike)."""
        self.head = head
        self.resp_started = False
        self.req_buf = self.head_out = None
        self.last_server = self.resp_head = None
        self.resp_bytes = 0
        self.rid = self.cache_status = b""
        self.queue_wait = self.sent_at = self.head_at = 0.0

    def start_filtered(self, head: RequestHead, route: RouteRuntime, add_lines: list[bytes]) -> None:
        """A request whose routing and request filters already ran in another exchange
        (a cache's background revalidation, pyvs/accel/revalidate.py): it goes on as
        after the filters, with their lines."""
        self._begin(head)
        self.add_lines = add_lines
        self.started = self.loop.time()
        self.route = route
        self.backend = route.backend
        self.attempts = 0
        self.view.reset(head)
        self.resume_request()

    def resume_request(self) -> None:
        """Go on with a request its last request filter answered WAIT for: what
        ``start`` does after the filters."""
        rt, backend, head, down = self.route, self.backend, self.head, self.down
        assert rt is not None and head is not None
        if backend is None:
            down.send_error(503, close=not down.req_ended)
            return
        if rt.buffer_request and not down.req_ended:
            self.held = rt.buffer_request
            self.held_buf = []
            return
        self.fast_path = rt.fast_response and backend.persist is None and head.keep_alive \
            and head.version == b"1.1" and not head.upgrade
        self.tried = _NONE_TRIED
        self.attempts = 0
        self._attempt(backend, head)

    def reply_now(self) -> None:
        """Answer a request its last request filter answered WAIT for with ``reply``."""
        self._reply()

    # ------------------------------------------------- buffer_request
    def _hold(self, chunk: bytes) -> None:
        """A body chunk while ``buffer_request`` collects (UpstreamLeg.request_body)."""
        self.held_buf.append(chunk)
        self.held -= len(chunk)
        if self.held <= 0:  # larger than the bound: the server gets it as it comes
            self._release()

    def _release(self) -> None:
        """Stop collecting: ask a server, which gets the collected body first."""
        self.held = 0
        buf = self.held_buf
        self.held_buf = []
        if buf:
            self.req_buf = buf
        if not self.down.req_ended:
            self.down.pause_reading()  # as for any body read before a server is ready
        backend, head, rt = self.backend, self.head, self.route
        assert backend is not None and head is not None and rt is not None
        self.fast_path = rt.fast_response and backend.persist is None and head.keep_alive \
            and head.version == b"1.1" and not head.upgrade
        self.tried = _NONE_TRIED
        self.attempts = 0
        self._attempt(backend, head)

    def _reply(self) -> None:
        """A filter answered (respond, redirect, deny)."""
        reply = self.reply
        head = self.head
        assert reply is not None and head is not None
        down = self.down
        close = not down.req_ended or not head.keep_alive or head.version != b"1.1" or down.close_after
        data = reply.encode(close=close, head_request=head.method == b"HEAD")
        self.worker.stats.local_replies += 1
        down.send_error(reply.status, close=close, data=data)

    def variable(self, name: str) -> bytes:
        """``%{name}`` for header templates (pyvs.l7.filters.variables); documented
        in docs/routing.md. Unknown names are refused when templates compile."""
        return VARIABLES[name](self)

    def request_id(self) -> bytes:
        """A request id unique in this instance: worker pid, connection and request
        counters (made on first use: requests that never ask pay nothing)."""
        rid = self.rid
        if not rid:
            w = self.worker
            w.request_ids += 1
            rid = self.rid = b"%x-%x" % (w.pid, w.request_ids)
        return rid

    def _short_start(self, head: RequestHead, backend: BackendRuntime) -> None:
        """The common request in one call: a bodiless idempotent HTTP/1.1 keep-alive
        request with a Host, the default forwarding fields, and a route with no
        filters to a backend whose scheduler reads nothing from the request. An idle
        pooled connection takes the request at once; anything else (no server, no
        idle connection) continues on the general path (_attempt, _use) with what was
        decided so far, so nothing is decided twice. What start, _attempt and _bound
        do in steps is done inline."""
        self.backend = backend
        self.fast_path = True
        self.started = now = self.loop.time()
        self.tried = _NONE_TRIED
        target = backend.scheduler.pick(backend._empty_ctx)
        if target is None:
            self.attempts = 0
            self._attempt(backend, head)  # no server up: sorry server, sorry page or 503
            return
        server = backend.by_index[target.index]
        self.server = server
        self.attempts = 1
        idle = server.idle
        conn = idle.pop() if idle else None
        if conn is None or conn.closed:
            self._use(server, head)
            return
        server.reused += 1
        server.active += 1  # ServerState.take, inline: this backend's counts are not shared
        server.requests += 1
        target.outstanding += 1  # Scheduler.taken (not overridden: BackendRuntime.simple)
        conn.owner = self
        self.up = conn
        # UpstreamConn.start_response; framer, inbuf and garbage are clear on a pooled connection.
        conn.head_request = head.method == b"HEAD"
        conn.response = None
        conn.bytes_in = 0
        t = conn.transport
        assert t is not None
        self.batch.write(t, b"".join((head.block, self.xff_line, self.lst.xfp_line, b"X-Forwarded-Host: ",
                                      head.host or b"", b"\r\n\r\n")))
        rt = self.route
        assert rt is not None
        total = rt.total_timeout
        conn.deadline = now + (rt.server_timeout if not total or total > rt.server_timeout else total)
        down = self.down
        if down.client_write_blocked:
            t.pause_reading()  # the client still is not reading: hold the server too
        if down.reading_paused:
            down.maybe_resume()

    # ----------------------------------------------------------- responses
    def on_response_head(self, rh: ResponseHead) -> int:
        status = rh.status
        self.head_at = self.loop.time()
        self.resp_started = True
        self.resp_status = status
        self.resp_head = rh
        server = self.server
        if server is not None:
            if status >= 500:
                server.responses_5xx += 1
                self._passive_error(server, "5xx")
            else:
                server.consecutive_errors = 0
                if server.passive_word:  # shared by the workers (passive health configured)
                    server.passive_ok()
        rt = self.route
        if rt is not None and rt.chain.response:
            self.stages = None
            for f in rt.chain.response:
                f.on_response(self, rh)
            if self.stages is not None:
                return self._present_staged(rh)
        return self.down.present(self, rh)

    # ------------------------------------------------------- body stages
    def stage_body(self, stage: BodyStage) -> None:
        """A response filter transforms this response's body (filters/base.py)."""
        if self.stages is None:
            self.stages = [stage]
        else:
            self.stages.append(stage)

    def _present_staged(self, rh: ResponseHead) -> int:
        """Frame a head whose body a stage rewrites: its length is unknown, so the
        head goes out without Content-Length, presented as a chunked body (chunked
        for HTTP/1.1, by the close for HTTP/1.0); the server's own framing still
        delimits what the upstream connection reads."""
        if rh.raw_ok:
            rh.block = strip_hop_fields(rh.block)
            rh.raw_ok = False
        rh.block = drop_length(rh.block)
        framing = rh.framing
        if rh.status in (204, 304):
            # Nothing may follow these (RFC 9110 6.4.1), whatever the server's framing (a
            # stored 204 answering for a 503 under stale-if-error): no chunked framing and no
            # last-chunk; what the server sends is still read by its own framing, and dropped.
            rh.framing = NO_BODY
            try:
                self.down.present(self, rh)
            finally:
                rh.framing = framing
            return STAGED_CLOSE
        rh.framing = CHUNKED
        try:
            mode = self.down.present(self, rh)
        finally:
            rh.framing = framing
        return STAGED_CLOSE if mode == DECODE else STAGED_CHUNKED

    def on_body(self, data: bytes, end: bool) -> bytes:
        """A piece of a staged response's body through the stages, in order."""
        stages = self.stages
        assert stages is not None
        for stage in stages:
            data = stage.feed(data, end)
        if end:
            up = self.up  # (a chunked body's trailer section is read by now: it ends the body)
            if up is not None:
                trailers = up.trailer_lines()
                if trailers:
                    return self._staged_trailers(up, data, trailers)
        return data

    def _staged_trailers(self, up: UpstreamConn, data: bytes, lines: bytes) -> bytes:
        """The server's trailers after a staged body (the last output ``data``). Each
        stage says what may follow what it made of the body (``trailers(lines)``, see
        filters/base.py); a stage without that say drops them, since they may describe
        bytes it changed. What is left goes in the last-chunk to an HTTP/1.1 client,
        to an HTTP/2 client as trailers (``on_trailers``, pyvs.h2.stream), and nowhere
        for an HTTP/1.0 one (its body ends with the close)."""
        for stage in self.stages or ():
            say = getattr(stage, "trailers", None)
            lines = say(lines) if say is not None else b""
            if not lines:
                return data
        if up.mode == STAGED_CHUNKED:
            # This last piece is framed here, trailer section included; STAGED_CLOSE
            # makes UpstreamConn.staged_out pass it on as it is, without its own last-chunk.
            up.mode = STAGED_CLOSE
            last = b"%x\r\n%b\r\n0\r\n" % (len(data), data) if data else b"0\r\n"
            return last + lines + b"\r\n"
        take = getattr(self, "on_trailers", None)
        if take is not None:
            take(lines)
        return data

    def on_response_end(self, conn: UpstreamConn) -> None:
        if self.up is conn:
            self.up = None
            self.server_done(self.resp_status < 500)
        self.resp_bytes = conn.bytes_in
        self._response_complete(conn)

    def on_whole_response(self, conn: UpstreamConn, rh: ResponseHead, data: bytes) -> bool:
        """The common exchange's end in one call, for an exchange marked ``fast_path``
        (an HTTP/1.1 keep-alive client, no persistence, no response filters): a
        response read whole in one piece, that needs no rewriting and is not an
        error, goes to the client byte for byte and the connection back to the pool.
        False: take the general path, which does the same in steps
        (on_response_head, framing, on_response_end)."""
        status = rh.status
        down = self.down
        t = down.transport
        if not 200 <= status < 300 or not rh.raw_ok or down.close_after or not down.req_ended \
                or self.up is not conn or self.wbuf or t is None or down.inbuf or down.reading_paused:
            return False
        self.batch.write(t, data)
        self.resp_status = status
        self.resp_head = rh
        self.resp_bytes = len(data)
        self.head_at = now = self.loop.time()
        # server_done(True)
        self.up = None
        down.up_write_blocked = False
        server = conn.server
        server.consecutive_errors = 0
        if server.passive_word:  # shared by the workers (passive health configured)
            server.passive_ok()
        backend = server.backend
        if server is self.server:
            self.server = None
            self.last_server = server
            if server.words is None:  # ServerState.give, inline where the counts are not shared
                server.active -= 1
            else:
                server.give()
                if backend.queue is not None:
                    backend.queue.kick()  # a slot is free: someone may be waiting for it
            if server.index >= 0:
                backend.scheduler.released(server.target)
                if backend.observes:
                    backend.scheduler.observed(server.target, now - self.started, True, now)
        if rh.keep_alive and len(server.idle) < backend.max_idle:
            # UpstreamConn.release of a connection whose response ended exactly with this read
            conn.owner = None
            conn.idle_since = now
            conn.deadline = now + backend.idle_timeout
            server.idle.append(conn)
        else:
            conn.release(now)
        down.whole_response_done(now)  # (before head is cleared: the end of the request is logged there)
        self.head = None
        self.resp_started = False
        return True

    def _response_complete(self, conn: UpstreamConn | None) -> None:
        down = self.down
        down.response_ended()
        now = self.loop.time()
        if conn is not None:
            if down.req_ended:
                conn.release(now)
            else:
                conn.close()
        down.exchange_done(self.resp_status, now)

    def detach(self) -> None:
        """The client connection has closed and finished this exchange: forget it
        (see :class:`pyvs.l7.downstream.Departed`), so the two are freed by reference
        counting instead of the cycle collector."""
        self.down = Departed()
        self.flush_client = self.on_interim = self.on_tunnel_data = self.upstream_eof = ignore

    def finished(self) -> None:
        """The downstream is done with this exchange (answered, errored, closed)."""
        if self.queued is not None:  # answered (or the client left) while waiting for a slot
            self.queued.leave(self)
            self.queued = None
        self.head = self.head_out = None
        self.resp_started = False
        if self.held:  # answered (or the client left) while the body was being collected
            self.held = 0
            self.held_buf = []
        # Body bytes kept for a server that never came (an error answered instead):
        # left here, they would keep the client's reading paused for good.
        self.req_buf = None

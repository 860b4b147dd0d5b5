"""The HTTP/1.1 reverse proxy: one protocol object per client connection.

Theory of operation
-------------------
The client byte stream alternates between two phases: a request *head*, found by its
terminating empty line and digested by :func:`pyvs.http.h1.parse_request_head`, and
a request *body*, delimited by a framer (:mod:`pyvs.http.framing`) and forwarded as
raw byte ranges. Once a request has been read completely the connection waits
(``WAIT``) for its response; bytes arriving meanwhile are pipelined requests, kept
in ``inbuf`` with reading paused, and parsed when the response is done.

For each request the proxy picks a backend (route) and a server (scheduler), takes
an idle pooled connection or opens one (the only place a task is created), writes
the head (the client's own head bytes minus hop-by-hop fields, plus the forwarding
fields) and streams the body. The server's response arrives through
:class:`pyvs.upstream.connection.UpstreamConn`, which asks :meth:`on_response_head`
how to present it: byte for byte when the client speaks HTTP/1.1 and nothing needs
rewriting (the common case: the whole response is one ``write``), or with a head
rebuilt for this client (``Connection: close``, HTTP/1.0 framing).

Backpressure both ways: a full server socket pauses reading from the client; a full
client socket pauses reading from the server. A response that cannot be completed
(the server died mid-body, a timeout after the head was sent) ends with the client
connection closed before the message is complete, so the client can never take a
truncated body for a whole one.

Retries: a failed connect is retried on another server. A request already written
to a connection that died before answering is resent only when it is idempotent and
has no body.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING

from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody, LengthBody
from pyvs.http.h1 import (
    CHUNKED,
    IDEMPOTENT,
    NO_BODY,
    UNTIL_CLOSE,
    RequestHead,
    ResponseHead,
    parse_request_head,
    strip_hop_fields,
)
from pyvs.l7.errors import error_response
from pyvs.upstream.connection import DECODE, ENCODE, RAW, REBUILT, UpstreamConn

if TYPE_CHECKING:
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.persist.policy import Sticky
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.http")

# A non-idempotent request only reuses a connection idle for less than this: the
# server is very unlikely to be closing it at that very moment.
UNSAFE_REUSE_MAX_IDLE = 2.0

_NONE_TRIED: frozenset[int] = frozenset()

# Client connection phases
HEAD = 0  # waiting for (the rest of) a request head
BODY = 1  # forwarding a request body
WAIT = 2  # request complete, response under way
TUNNEL = 3  # after 101: raw bytes both ways
PROXY = 4  # accept_proxy: waiting for the PROXY protocol header


class HttpFrontend(asyncio.Protocol):
    """Server side of one client connection."""

    def __init__(self, listener: ListenerRuntime) -> None:
        self.lst = listener
        self.worker = listener.worker
        self.loop = listener.worker.loop
        # The short paths write through the worker's batch; every other write or close
        # on a connection of this exchange calls batch.flush() first (ordering).
        self.batch = listener.worker.batch
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.trusted = False
        self.xff_line = b""
        self.fw_plain = False  # default forwarding fields, client not trusted: the short path
        self.deadline = 0.0
        self.idle_wait = False
        self.phase = HEAD
        self.inbuf = b""
        self.req: RequestHead | None = None
        self.req_framer: LengthBody | ChunkedBody | None = None
        self.req_ended = False
        self.req_buf: list[bytes] | None = None  # body bytes read before a server was ready
        self.backend: BackendRuntime | None = None
        self.server: ServerState | None = None
        self.tried: frozenset[int] = frozenset()
        self.attempts = 0
        self.started = 0.0
        self.up: UpstreamConn | None = None
        self.connecting: UpstreamConn | None = None
        self.connect_task: asyncio.Task[object] | None = None
        self.reading_paused = False
        self.up_write_blocked = False
        self.client_write_blocked = False
        self.resp_started = False
        self.resp_status = 0
        self.resp_until_close = False
        self.resp_encoded = False
        self.close_after = False
        self.tunnel_eofs = 0
        self.closed = False
        # Response bytes gathered while one read from the server is handled, written
        # with one writelines(): head, body and terminator usually cost one syscall.
        self.wbuf: list[bytes] = []
        # Persistence state of the current exchange (pyvs/persist), for backends that have it.
        self.stick: Sticky | None = None
        # The exchange under way may end in on_whole_response (see there).
        self.fast_path = False

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        self._set_client(ip)
        w = self.worker
        w.stats.client_connections += 1
        w.frontends.add(self)
        w.sweeper.add(self)
        self.deadline = self.loop.time() + self.lst.request_timeout
        if w.draining:
            self.close_after = True
        if self.lst.accept_proxy:
            self.phase = PROXY

    def _set_client(self, ip: str) -> None:
        """The client's address (from the socket, or from a PROXY header) and what
        follows from it once per connection: trust, the X-Forwarded-For line."""
        self.client_ip = ip.encode()
        self.trusted = self.lst.is_trusted(ip)
        self.xff_line = b"X-Forwarded-For: " + self.client_ip + b"\r\n"
        self.fw_plain = self.lst.fw_default and not self.trusted

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == HEAD:
            self._heads(data)
        elif phase == BODY:
            self._request_body(data, 0)
        elif phase == TUNNEL:
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(data)
        elif phase == PROXY:
            self._proxy_header(data)
        else:  # WAIT: a pipelined request (or tunnel bytes before the 101)
            self.inbuf += data
            self._pause_reading()

    def eof_received(self) -> bool | None:
        self.batch.flush()  # a response still in the batch must leave before a close
        up = self.up
        if self.phase == TUNNEL and up is not None and up.transport is not None:
            self.tunnel_eofs += 1
            if self.tunnel_eofs >= 2 or not up.transport.can_write_eof():
                self._close()
                return None
            up.transport.write_eof()
            return True
        if self.phase == WAIT:
            # A client that half-closes after its request still gets the response.
            self.close_after = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.worker
        w.frontends.discard(self)
        w.sweeper.discard(self)
        if self.connecting is not None:
            self.connecting = None
            if self.connect_task is not None:
                self.connect_task.cancel()
        up = self.up
        if up is not None:
            self.up = None
            self._server_done()
            up.abort()
        self.req = None

    def pause_writing(self) -> None:
        self.client_write_blocked = True
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()
            up.deadline = 0.0
        self.deadline = self.loop.time() + self.lst.client_timeout
        self._pause_reading()

    def resume_writing(self) -> None:
        self.client_write_blocked = False
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
            if self.phase != TUNNEL:  # a tunnel has no server timeout
                up.deadline = self.loop.time() + up.server.backend.server_timeout
            self.deadline = 0.0
        self._maybe_resume()

    def _proxy_header(self, data: bytes) -> None:
        """accept_proxy: the connection starts with a PROXY v1/v2 header naming the client."""
        from pyvs.l4.proxyproto import ProxyProtocolError, parse

        buf = self.inbuf + data
        try:
            hdr = parse(buf)
        except ProxyProtocolError:
            self.worker.stats.bad_requests += 1
            self._abort()  # not a PROXY header: nothing on this connection can be trusted
            return
        if hdr is None:
            self.inbuf = buf
            return
        if hdr.src is not None:
            self._set_client(hdr.src[0])
        self.inbuf = b""
        self.phase = HEAD
        rest = buf[hdr.consumed :]
        if rest:
            self._heads(rest)

    # ------------------------------------------------------------ timeouts
    def on_deadline(self, now: float) -> None:
        if self.req is None:
            if self.idle_wait:
                self._close()  # keep-alive idle time is over: nothing to say
            else:
                self._send_error(408, close=True)  # the request head did not arrive in time
            return
        # The client stopped sending its body or stopped reading our response.
        self.worker.stats.client_timeouts += 1
        if not self.resp_started and not self.req_ended:
            self._send_error(408, close=True)
        else:
            self._abort()

    # ------------------------------------------------------------ requests
    def _heads(self, data: bytes) -> None:
        if self.inbuf:
            data = self.inbuf + data
            self.inbuf = b""
        was_idle = self.idle_wait
        if was_idle:
            self.idle_wait = False
        if data and data[0] in (13, 10):
            data = data.lstrip(b"\r\n")  # empty lines before a request line are ignored
            if not data:
                if was_idle:  # bytes after the idle wait: the request timeout runs from now
                    self.deadline = self.loop.time() + self.lst.request_timeout
                return
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self.lst.max_head:
            if len(data) > self.lst.max_head or end >= 0:
                self._protocol_error(ProtocolError("request head too large", 431))
                return
            self.inbuf = data
            if was_idle or not self.deadline:  # a partial head is bounded by the request timeout
                self.deadline = self.loop.time() + self.lst.request_timeout
            return
        end += 4
        try:
            head = parse_request_head(data if end == len(data) else data[:end])
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        self.req = head
        self.deadline = 0.0
        self.resp_started = False
        self.req_buf = None
        if head.framing == NO_BODY:
            self.phase = WAIT
            self.req_ended = True
            if end < len(data):
                self.inbuf = data[end:]
                self._pause_reading()
            backend = self.lst.short_backend
            if backend is not None and self.fw_plain and head.keep_alive and head.host and head.version == b"1.1" \
                    and not head.upgrade and head.method in IDEMPOTENT:
                self._short_start(head, backend)
            else:
                self._start(head)
            return
        self.phase = BODY
        self.req_ended = False
        self.req_framer = LengthBody(head.length) if head.framing != CHUNKED else ChunkedBody()
        self._start(head)
        if self.phase == BODY and not self.closed:
            self._request_body(data, end)

    def _request_body(self, data: bytes, pos: int) -> None:
        framer = self.req_framer
        assert framer is not None
        try:
            end, done = framer.feed(data, pos)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if end > pos:
            chunk = data if pos == 0 and end == len(data) else data[pos:end]
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(chunk)  # written past the high-water mark too: reading pauses
            else:
                if self.req_buf is None:
                    self.req_buf = []
                self.req_buf.append(chunk)
                self._pause_reading()
        if done:
            self.phase = WAIT
            self.req_framer = None
            self.req_ended = True
            self.deadline = 0.0
            if end < len(data):
                self.inbuf = data[end:]
                self._pause_reading()
            up = self.up
            if up is not None:
                self._await_response(up)
        else:
            self.deadline = self.loop.time() + self.lst.client_timeout

    def _await_response(self, up: UpstreamConn) -> None:
        backend = up.server.backend
        up.deadline = self.loop.time() + backend.server_timeout
        if backend.total_timeout:
            up.deadline = min(up.deadline, self.started + backend.total_timeout)

    def _start(self, head: RequestHead) -> None:
        if head.method == b"CONNECT":
            self._send_error(405, close=True)
            return
        backend = self.lst.route(head.host, head.path) if self.lst.routes else self.lst.default_backend
        if backend is None:
            self._send_error(503, close=not self.req_ended)
            return
        self.backend = backend
        self.fast_path = backend.persist is None and head.keep_alive and head.version == b"1.1" and not head.upgrade
        self.started = self.loop.time()
        self.tried = _NONE_TRIED
        self.attempts = 0
        self._attempt(backend, head)

    def _short_start(self, head: RequestHead, backend: BackendRuntime) -> None:
        """The common request in one call: a bodiless idempotent HTTP/1.1 keep-alive
        request with a Host, the default forwarding fields, and a listener whose every
        request goes to one backend whose scheduler reads nothing from the request
        (``ListenerRuntime.short_backend``). An idle pooled connection takes the
        request at once; anything else (no server, no idle connection) continues on
        the general path (_attempt, _use) with what was decided so far, so nothing is
        decided twice. What _start, _attempt and _bound do in steps is done inline."""
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
        server.active += 1
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
        total = backend.total_timeout
        conn.deadline = now + (backend.server_timeout if not total or total > backend.server_timeout else total)
        if self.client_write_blocked:
            t.pause_reading()  # the client still is not reading: hold the server too
        if self.reading_paused:
            self._maybe_resume()

    def _attempt(self, backend: BackendRuntime, head: RequestHead) -> None:
        persist = backend.persist
        if persist is None:
            server = backend.pick(self.tried, self, head, self.started)
        else:
            server = persist.pick(self, head, self.tried, self.started)
        if server is None:
            if self.tried:
                self._send_error(502, close=not self.req_ended)
                return
            backend.no_server += 1
            server = backend.sorry_server
            if server is None:
                sorry = backend.sorry_response
                if sorry is None:
                    self._send_error(503, close=not self.req_ended)
                else:
                    close = not self.req_ended or not head.keep_alive or self.close_after
                    self._send_error(503, close=close, data=sorry[1] if close else sorry[0])
                return
        self.server = server
        self.attempts += 1
        self._use(server, head)

    def _use(self, server: ServerState, head: RequestHead) -> None:
        """Send the request to ``server``: on an idle pooled connection, or a new one."""
        backend = server.backend
        if server.idle:
            conn = server.take_idle(self.started, 0.0 if head.replayable else UNSAFE_REUSE_MAX_IDLE)
            if conn is not None:
                server.reused += 1
                conn.owner = self
                self._bound(conn, head)
                return
        conn = UpstreamConn(server, self, self.worker.sweeper)
        conn.deadline = self.loop.time() + backend.connect_timeout
        self.worker.sweeper.add(conn)
        self.connecting = conn
        task = self.loop.create_task(self.loop.create_connection(lambda: conn, server.host, server.port))
        self.connect_task = task
        task.add_done_callback(partial(self._connect_done, conn))

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
        head = self.req
        backend = self.backend
        assert head is not None and backend is not None
        log.warning("connect to %s/%s (%s:%d) failed: %s", backend.name, server.name, server.host, server.port,
                    exc or "error")
        if self.attempts <= backend.retries:
            self.worker.stats.retries += 1
            self.tried = self.tried | server.index_set
            self._attempt(backend, head)
        else:
            self._send_error(504 if isinstance(exc, TimeoutError) else 502, close=not self.req_ended)

    # ------------------------------------------------- connection callbacks
    def upstream_ready(self, conn: UpstreamConn) -> None:
        if conn is not self.connecting or self.req is None:
            conn.close()
            return
        self.connecting = None
        self.connect_task = None
        conn.server.opened += 1
        self._bound(conn, self.req)

    def _bound(self, conn: UpstreamConn, head: RequestHead) -> None:
        self.up = conn
        server = conn.server
        server.active += 1
        server.requests += 1
        if server.index >= 0:  # the sorry server is outside the scheduler
            server.backend.scheduler.taken(server.target)
        conn.start_response(head.method == b"HEAD")
        t = conn.transport
        assert t is not None
        if self.client_write_blocked:
            t.pause_reading()  # the client still is not reading: hold the server too
        if self.fw_plain and head.framing != CHUNKED and head.host and head.version == b"1.1" and not head.upgrade:
            # The default forwarding fields for an ordinary request: one join.
            out = b"".join((head.block, self.xff_line, self.lst.xfp_line, b"X-Forwarded-Host: ", head.host,
                            b"\r\n\r\n"))
        else:
            out = self._request_head(head, server)
        buf = self.req_buf
        if buf:
            self.req_buf = None
            t.writelines([out, *buf])
        else:
            t.write(out)
        if self.req_ended:
            self._await_response(conn)
        else:
            conn.deadline = 0.0
            self.deadline = self.loop.time() + self.lst.client_timeout
        if self.reading_paused:
            self._maybe_resume()

    def _request_head(self, head: RequestHead, server: ServerState) -> bytes:
        lst = self.lst
        block = head.block
        if head.version == b"1.0":
            block = block.replace(b" HTTP/1.0\r\n", b" HTTP/1.1\r\n", 1)
            if head.host is None:
                block += b"Host: " + server.host_header + b"\r\n"
        parts = [block]
        trusted = self.trusted
        if lst.fw_xff:
            if trusted and head.xff:
                parts += (b"X-Forwarded-For: ", head.xff, b", ", self.client_ip, b"\r\n")
            else:
                parts.append(self.xff_line)
        elif trusted and head.xff is not None:
            parts += (b"X-Forwarded-For: ", head.xff, b"\r\n")
        if lst.fw_xfp:
            if trusted and head.xf_proto:
                parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
            else:
                parts.append(lst.xfp_line)
        elif trusted and head.xf_proto is not None:
            parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
        if lst.fw_xfh:
            xfh = head.xf_host if trusted and head.xf_host else head.host
            if xfh:
                parts += (b"X-Forwarded-Host: ", xfh, b"\r\n")
        elif trusted and head.xf_host is not None:
            parts += (b"X-Forwarded-Host: ", head.xf_host, b"\r\n")
        if lst.fw_forwarded:
            ip = self.client_ip
            node = b'"[' + ip + b']"' if b":" in ip else ip
            elem = b"for=" + node + b";proto=" + lst.scheme
            if head.host:
                elem += b';host="' + head.host.replace(b'"', b"") + b'"'
            if trusted and head.forwarded:
                elem = head.forwarded + b", " + elem
            parts += (b"Forwarded: ", elem, b"\r\n")
        elif trusted and head.forwarded is not None:
            parts += (b"Forwarded: ", head.forwarded, b"\r\n")
        if lst.fw_via:
            parts += (b"Via: ", b"1.0 pyvs" if head.version == b"1.0" else lst.via_value, b"\r\n")
        if head.framing == CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if head.upgrade:
            parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def upstream_write_blocked(self, blocked: bool) -> None:
        self.up_write_blocked = blocked
        up = self.up
        if blocked:
            self._pause_reading()
            if up is not None and not self.req_ended and self.phase != TUNNEL:
                # A server that stops reading the upload is bounded by the server timeout.
                up.deadline = self.loop.time() + up.server.backend.server_timeout
        else:
            if up is not None and not self.req_ended and self.phase != TUNNEL:
                up.deadline = 0.0
            self._maybe_resume()

    def upstream_eof(self, conn: UpstreamConn) -> None:
        """The server half-closed a tunnel: pass it on; close when both sides are done."""
        t = self.transport
        if t is None or self.closed:
            return
        self.tunnel_eofs += 1
        if self.tunnel_eofs >= 2 or not t.can_write_eof():
            self._close()
        else:
            t.write_eof()

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
        self._server_done()
        conn.abort()
        if self.resp_started or self.phase == TUNNEL:
            self._abort()
        else:
            self._send_error(504, close=not self.req_ended)

    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None:
        if conn is self.connecting or conn is not self.up:
            return  # a failed connect is handled by _connect_done
        self.up = None
        self._server_done()
        if self.phase == TUNNEL:
            self._close()
            return
        if self.resp_started:
            if self.resp_until_close and exc is None:
                self._response_complete(None)
            else:
                self.worker.stats.truncated_responses += 1
                log.warning("server %s/%s closed mid-response", conn.server.backend.name, conn.server.name)
                self._abort()
            return
        head = self.req
        backend = self.backend
        assert head is not None and backend is not None
        if (
            conn.bytes_in == 0
            and head.replayable
            and self.attempts <= backend.retries
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
        self._send_error(502, close=True)

    def _server_done(self, ok: bool | None = None) -> None:
        """The exchange with ``self.server`` is over; ``ok`` (answered without a 5xx)
        is passed to latency-aware schedulers when the exchange completed."""
        self.up_write_blocked = False  # that connection's backpressure is gone with it
        server = self.server
        if server is not None:
            self.server = None
            server.active -= 1
            if server.index >= 0:
                backend = server.backend
                backend.scheduler.released(server.target)
                if ok is not None and backend.observes:  # latency-aware algorithms only
                    now = self.loop.time()
                    backend.scheduler.observed(server.target, now - self.started, ok, now)

    def _passive_error(self, server: ServerState, kind: str) -> None:
        """Count a failure on live traffic; report the server after too many in a row."""
        backend = server.backend
        if kind in backend.passive_kinds and server.index >= 0:
            server.consecutive_errors += 1
            if server.consecutive_errors >= backend.passive_threshold:
                server.consecutive_errors = 0
                self.worker.report_outlier(server, kind)

    # ----------------------------------------------------------- responses
    def on_interim(self, rh: ResponseHead) -> None:
        req = self.req
        if req is not None and req.version == b"1.1" and not self.closed:
            self.wbuf.append(rh.block + b"\r\n")
            self.flush_client()

    def on_response_head(self, rh: ResponseHead) -> int:
        req = self.req
        assert req is not None
        status = rh.status
        self.resp_started = True
        self.resp_status = status
        server = self.server
        if server is not None:
            if status >= 500:
                server.responses_5xx += 1
                self._passive_error(server, "5xx")
            else:
                server.consecutive_errors = 0
            persist = server.backend.persist
            if persist is not None:  # may edit rh.block and clear rh.raw_ok (Set-Cookie)
                persist.on_response(self, rh, server)
        client11 = req.version == b"1.1"
        close = self.close_after or not req.keep_alive or not self.req_ended or self.worker.draining
        framing = rh.framing
        self.resp_until_close = framing == UNTIL_CLOSE
        if status == 101:
            if not req.upgrade or rh.upgrade is None:
                self._abort()
                return REBUILT
            self.wbuf.append(rh.block + b"Connection: upgrade\r\nUpgrade: " + rh.upgrade + b"\r\n\r\n")
            self.flush_client()
            self._start_tunnel()
            return REBUILT
        if req.upgrade:
            close = True  # the client may already be sending the other protocol
        if rh.raw_ok and client11 and not close and framing != UNTIL_CLOSE:
            return RAW
        mode = REBUILT
        extra = b""
        if framing == CHUNKED and req.method != b"HEAD":
            if client11:
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                mode = DECODE
                close = True
        elif framing == UNTIL_CLOSE:
            if client11:
                mode = ENCODE  # keep the client connection: chunk what the server streams
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                close = True
        self.resp_encoded = mode == ENCODE
        if close:
            extra += b"Connection: close\r\n"
        elif not client11:
            extra += b"Connection: keep-alive\r\n"
        self.close_after = close
        block = rh.block
        if rh.raw_ok:  # still holds the server's "Connection: keep-alive": ours replaces it
            block = strip_hop_fields(block)
        self.wbuf.append(block + extra + b"\r\n")
        return mode

    def flush_client(self) -> None:
        """Write what the last server read produced."""
        wbuf = self.wbuf
        if wbuf:
            self.batch.flush()
            if not self.closed and self.transport is not None:
                if len(wbuf) == 1:
                    self.transport.write(wbuf[0])
                else:
                    self.transport.writelines(wbuf)
            wbuf.clear()

    def on_tunnel_data(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.batch.flush()
            self.transport.write(data)

    def on_response_end(self, conn: UpstreamConn) -> None:
        if self.up is conn:
            self.up = None
            self._server_done(self.resp_status < 500)
        self._response_complete(conn)

    def on_whole_response(self, conn: UpstreamConn, rh: ResponseHead, data: bytes) -> bool:
        """The common exchange's end in one call, for an exchange marked ``fast_path``
        (an HTTP/1.1 keep-alive client, no persistence): a response read whole in one
        piece, that needs no rewriting and is not an error, goes to the client byte for
        byte and the connection back to the pool. False: take the general path, which
        does the same in steps (on_response_head, framing, on_response_end)."""
        status = rh.status
        t = self.transport
        if not 200 <= status < 300 or not rh.raw_ok or self.close_after or not self.req_ended \
                or self.up is not conn or self.wbuf or t is None or self.inbuf or self.reading_paused:
            return False
        self.batch.write(t, data)
        self.resp_status = status
        now = self.loop.time()
        # _server_done(True)
        self.up = None
        self.up_write_blocked = False
        server = conn.server
        server.consecutive_errors = 0
        backend = server.backend
        if server is self.server:
            self.server = None
            server.active -= 1
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
        # _exchange_done for a 2xx on a connection that stays open, with nothing pipelined
        stats = self.worker.stats
        stats.requests += 1
        stats.responses_2xx += 1
        self.req = None
        self.resp_started = False
        self.phase = HEAD
        self.idle_wait = True
        self.deadline = now + self.lst.client_timeout
        return True

    def _response_complete(self, conn: UpstreamConn | None) -> None:
        if self.resp_encoded:
            self.resp_encoded = False
            self.wbuf.append(b"0\r\n\r\n")
        self.flush_client()
        now = self.loop.time()
        if conn is not None:
            if self.req_ended:
                conn.release(now)
            else:
                conn.close()
        self._exchange_done(self.resp_status, now)

    def _exchange_done(self, status: int, now: float) -> None:
        stats = self.worker.stats
        stats.requests += 1
        if 200 <= status < 300:
            stats.responses_2xx += 1
        else:
            stats.count_status(status)
        self.req = None
        self.resp_started = False
        if self.close_after or self.closed:
            self._close()
            return
        if self.phase == BODY:
            # Answered before the whole body arrived (an error): the rest cannot be read safely.
            self._close()
            return
        self.phase = HEAD
        if self.inbuf:
            # Pipelined requests: parsed on the next loop turn, so a long pipeline
            # answered by pyvs itself (errors) does not recurse.
            self.loop.call_soon(self._next_pipelined)
            self.deadline = now + self.lst.request_timeout
        else:
            self.idle_wait = True
            self.deadline = now + self.lst.client_timeout
        if self.reading_paused:
            self._maybe_resume()

    def _next_pipelined(self) -> None:
        if self.phase == HEAD and self.req is None and self.inbuf and not self.closed:
            data = self.inbuf
            self.inbuf = b""
            self._heads(data)

    # ------------------------------------------------------------- tunnel
    def _start_tunnel(self) -> None:
        up = self.up
        if up is None or up.transport is None:
            self._close()
            return
        self.phase = TUNNEL
        up.deadline = 0.0
        self.deadline = 0.0
        self.worker.stats.upgrades += 1
        if self.inbuf:
            up.transport.write(self.inbuf)
            self.inbuf = b""
        self._maybe_resume()

    # ------------------------------------------------------------ helpers
    def _send_error(self, status: int, *, close: bool, data: bytes | None = None) -> None:
        self.batch.flush()
        t = self.transport
        if t is None or self.closed:
            return
        if self.resp_started:
            self._abort()
            return
        req = self.req
        if (req is not None and (req.version != b"1.1" or not req.keep_alive)) or self.close_after:
            close = True
        self.close_after = close or self.close_after
        self.resp_status = status
        t.write(data if data is not None else error_response(status, close))
        up = self.up
        if up is not None:
            self.up = None
            self._server_done()
            up.abort()
        self._exchange_done(status, self.loop.time())

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.worker.stats.bad_requests += 1
        if self.resp_started:
            # Garbage while a response is being sent: it cannot be answered any more.
            self._abort()
            return
        up = self.up
        if up is not None:  # e.g. a bad chunk in a body already being forwarded
            self.up = None
            self._server_done()
            up.abort()
        if self.connecting is not None:
            self.connecting = None
            if self.connect_task is not None:
                self.connect_task.cancel()
        self.req = None
        t = self.transport
        if t is not None and not self.closed:
            self.batch.flush()
            t.write(error_response(exc.status, True))
        self.worker.stats.count_status(exc.status)
        self._close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if not self.reading_paused or self.closed:
            return
        if self.up_write_blocked or self.client_write_blocked or self.req_buf is not None:
            return
        if self.inbuf and self.phase != HEAD:
            return
        self.reading_paused = False
        assert self.transport is not None
        self.transport.resume_reading()

    def drain(self) -> None:
        """Graceful stop: finish the current exchange, then close."""
        self.close_after = True
        if self.req is None and self.up is None:
            self._close()

    def _close(self) -> None:
        self.batch.flush()
        self.flush_client()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _abort(self) -> None:
        """Close at once: whatever the client got is visibly incomplete."""
        up = self.up
        if up is not None:
            self.up = None
            self._server_done()
            up.abort()
        self.wbuf.clear()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

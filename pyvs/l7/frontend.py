"""The HTTP/1.1 reverse proxy: one protocol object per client connection.

Theory of operation
-------------------
Bytes from the client go through a :class:`RequestReader`; each request becomes an
:class:`Exchange`. One exchange is *active* at a time; pipelined requests wait in
``pending`` (and the client is paused so they cannot pile up). The active exchange:

1. picks a backend (route) and a server (scheduler), then takes an idle pooled
   connection or opens one (the only place a task is created);
2. writes the request head (end-to-end fields kept as bytes, framing and
   X-Forwarded-* added) and streams the body, re-chunked if it came chunked;
3. receives response events straight from the connection's reader and streams them
   to the client, choosing the framing the client understands;
4. on the response's end returns the connection to the pool (if both sides allow
   it) and starts the next pipelined request.

Backpressure both ways: a full server socket pauses reading from the client; a full
client socket pauses reading from the server. A response that cannot be completed
(the server died mid-body, a timeout after the head was sent) ends with the client
connection closed before the message is complete, so the client can never take a
truncated body for a whole one.

Retries: a failed connect is retried on another server. A request already written
to a reused connection that died before answering is resent only when it is
idempotent and has no body.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

from pyvs.http.codec import IDEMPOTENT, ProtocolError, RequestHead, RequestReader, ResponseHead
from pyvs.l7.errors import error_response
from pyvs.upstream.connection import UpstreamConn

if TYPE_CHECKING:
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.http")

# A non-idempotent request only reuses a connection idle for less than this: the
# server is very unlikely to be closing it at that very moment.
UNSAFE_REUSE_MAX_IDLE = 2.0


class Exchange:
    """One request/response pair on a client connection."""

    __slots__ = ("attempts", "backend", "buf", "ended", "head", "server", "started", "trailers", "tried")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.buf: list[bytes] | None = None  # body received before it could be sent
        self.ended = False
        self.trailers = b""
        self.backend: BackendRuntime | None = None
        self.server: ServerState | None = None
        self.tried: frozenset[int] = frozenset()
        self.attempts = 0
        self.started = 0.0


class HttpFrontend(asyncio.Protocol):
    """Server side of one client connection."""

    def __init__(self, listener: ListenerRuntime) -> None:
        self.lst = listener
        self.worker = listener.worker
        self.loop = listener.worker.loop
        self.reader = RequestReader(self, listener.max_head)
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.trusted = False
        self.deadline = 0.0
        self.idle_wait = False
        self.active: Exchange | None = None
        self.parsing: Exchange | None = None
        self.pending: deque[Exchange] | None = None
        self.up: UpstreamConn | None = None
        self.connecting: UpstreamConn | None = None
        self.connect_task: asyncio.Task[object] | None = None
        self.reading_paused = False
        self.up_write_blocked = False
        self.client_write_blocked = False
        self.resp_started = False
        self.resp_interim = False
        self.resp_chunked = False
        self.resp_until_close = False
        self.resp_status = 0
        self.resp_keepalive = False
        self.tunnel_eofs = 0
        self.close_after = False
        self.tunnel = False
        self.tunnel_buf: list[bytes] | None = None
        self.closed = False
        # Response bytes gathered while one read from the server is parsed, written
        # with one writelines(): head, body and terminator usually cost one syscall.
        self.wbuf: list[bytes] = []

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        self.client_ip = ip.encode()
        self.trusted = self.lst.is_trusted(ip)
        w = self.worker
        w.stats.client_connections += 1
        w.frontends.add(self)
        w.sweeper.add(self)
        self.deadline = self.loop.time() + self.lst.request_timeout
        if w.draining:
            self.close_after = True

    def data_received(self, data: bytes) -> None:
        if self.tunnel_buf is not None:
            if self.tunnel and self.up is not None and self.up.transport is not None:
                self.up.transport.write(data)
            else:
                self.tunnel_buf.append(data)
                self._pause_reading()
            return
        if self.idle_wait:
            self.idle_wait = False
            self.deadline = self.loop.time() + self.lst.request_timeout
        try:
            offset = self.reader.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        except Exception:  # a bug in a callback must not leave the client hanging
            log.exception("request handling failed")
            self._protocol_error(ProtocolError("internal error", 500))
            return
        if offset is not None and not self.closed:
            self.tunnel_buf = [data[offset:]] if offset < len(data) else []
            self._pause_reading()

    def eof_received(self) -> bool | None:
        if self.tunnel and self.up is not None and self.up.transport is not None:
            self.tunnel_eofs += 1
            if self.tunnel_eofs >= 2 or not self.up.transport.can_write_eof():
                self._close()
                return None
            self.up.transport.write_eof()
            return True
        act = self.active
        if act is not None and act.ended:
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
            self._server_done(self.active)
            up.abort()
        self.active = None
        self.pending = None

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
            up.deadline = self.loop.time() + up.server.backend.server_timeout
            self.deadline = 0.0
        self._maybe_resume()

    # ------------------------------------------------------------ timeouts
    def on_deadline(self, now: float) -> None:
        ex = self.active
        if ex is None:
            if self.idle_wait:
                self._close()  # keep-alive idle time is over: nothing to say
            else:
                self._send_error(408, close=True)  # the request head did not arrive in time
            return
        # The client stopped sending its body or stopped reading our response.
        self.worker.stats.client_timeouts += 1
        if not self.resp_started and not ex.ended:
            self._send_error(408, close=True)
        else:
            self._abort()

    # ------------------------------------------------------------ requests
    def on_request_head(self, head: RequestHead) -> None:
        ex = Exchange(head)
        self.parsing = ex
        if self.active is None:
            self.active = ex
            self.deadline = 0.0
            self._start(ex)
        else:
            if self.pending is None:
                self.pending = deque()
            self.pending.append(ex)
            self._pause_reading()

    def on_request_body(self, data: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        up = self.up
        if ex is self.active and up is not None:
            # Written even past the high-water mark: reading is paused meanwhile.
            self._send_body(up, ex, data)
            if not ex.ended:
                self.deadline = self.loop.time() + self.lst.client_timeout
            return
        if ex.buf is None:
            ex.buf = []
        ex.buf.append(data)
        self._pause_reading()

    def on_request_end(self, trailers: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        ex.ended = True
        ex.trailers = trailers
        if ex is self.active:
            self.deadline = 0.0
            up = self.up
            if up is not None and ex.buf is None:
                self._send_end(up, ex)

    def _send_body(self, up: UpstreamConn, ex: Exchange, data: bytes) -> None:
        t = up.transport
        assert t is not None
        if ex.head.chunked:
            t.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            t.write(data)

    def _send_end(self, up: UpstreamConn, ex: Exchange) -> None:
        if ex.head.chunked:
            assert up.transport is not None
            up.transport.write(b"0\r\n" + ex.trailers + b"\r\n")
        backend = up.server.backend
        up.deadline = self.loop.time() + backend.server_timeout
        if backend.total_timeout:
            up.deadline = min(up.deadline, ex.started + backend.total_timeout)

    def _start(self, ex: Exchange) -> None:
        head = ex.head
        if head.method == b"CONNECT":
            self._send_error(405, close=True)
            return
        backend = self.lst.route(head.host, head.path)
        if backend is None:
            self._send_error(503, close=not ex.ended)
            return
        ex.backend = backend
        ex.started = self.loop.time()
        self.resp_started = False
        self.resp_interim = False
        self._attempt(ex)

    def _attempt(self, ex: Exchange) -> None:
        backend = ex.backend
        assert backend is not None
        server = backend.pick(ex.tried)
        if server is None:
            backend.no_server += 1
            self._send_error(503 if not ex.tried else 502, close=not ex.ended)
            return
        ex.server = server
        ex.tried = ex.tried | {server.target.index}
        ex.attempts += 1
        now = self.loop.time()
        conn = None
        if backend.max_idle:
            safe = ex.head.method in IDEMPOTENT and not ex.head.has_body
            conn = server.take_idle(now, 0.0 if safe else UNSAFE_REUSE_MAX_IDLE)
        if conn is not None:
            server.reused += 1
            conn.bind(self)
            self._bound(conn, ex)
            return
        conn = UpstreamConn(server, self, self.worker.sweeper)
        conn.deadline = now + backend.connect_timeout
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
        if self.connecting is not conn:
            return  # the client went away meanwhile
        self.connecting = None
        self.connect_task = None
        ex = self.active
        assert ex is not None and ex.backend is not None
        log.warning(
            "connect to %s/%s (%s:%d) failed: %s",
            ex.backend.name, server.name, server.host, server.port, exc or "error",
        )
        if ex.attempts <= ex.backend.retries:
            self.worker.stats.retries += 1
            self._attempt(ex)
        else:
            self._send_error(504 if isinstance(exc, TimeoutError) else 502, close=not ex.ended)

    # ------------------------------------------------- connection callbacks
    def upstream_ready(self, conn: UpstreamConn) -> None:
        if conn is not self.connecting or self.active is None:
            conn.close()
            return
        self.connecting = None
        self.connect_task = None
        conn.server.opened += 1
        self._bound(conn, self.active)

    def _bound(self, conn: UpstreamConn, ex: Exchange) -> None:
        self.up = conn
        server = conn.server
        server.active += 1
        server.requests += 1
        server.backend.scheduler.taken(server.target)
        head = ex.head
        conn.reader.expect(head.method == b"HEAD")
        t = conn.transport
        assert t is not None
        out = self._request_head(head, server)
        buf = ex.buf
        if buf:
            ex.buf = None
            if head.chunked:
                parts = [out]
                for chunk in buf:
                    parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
                t.writelines(parts)
            else:
                t.writelines([out, *buf])
        else:
            ex.buf = None
            t.write(out)
        if ex.ended:
            self._send_end(conn, ex)
        else:
            conn.deadline = 0.0
            self.deadline = self.loop.time() + self.lst.client_timeout
        self._maybe_resume()

    def _request_head(self, head: RequestHead, server: ServerState) -> bytes:
        lst = self.lst
        parts: list[bytes | bytearray] = [
            head.method, b" ", head.target, b" HTTP/1.1\r\nHost: ", head.host or server.host_header, b"\r\n",
            head.fields,
        ]
        ip = self.client_ip
        if lst.fw_xff:
            if self.trusted and head.xff:
                parts += (b"X-Forwarded-For: ", head.xff, b", ", ip, b"\r\n")
            else:
                parts += (b"X-Forwarded-For: ", ip, b"\r\n")
        elif self.trusted and head.xff is not None:
            parts += (b"X-Forwarded-For: ", head.xff, b"\r\n")
        if lst.fw_xfp:
            if self.trusted and head.xf_proto:
                parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
            else:
                parts.append(lst.xfp_line)
        elif self.trusted and head.xf_proto is not None:
            parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
        if lst.fw_xfh:
            xfh = head.xf_host if self.trusted and head.xf_host else head.host
            if xfh:
                parts += (b"X-Forwarded-Host: ", xfh, b"\r\n")
        elif self.trusted and head.xf_host is not None:
            parts += (b"X-Forwarded-Host: ", head.xf_host, b"\r\n")
        if lst.fw_forwarded:
            node = b'"[' + ip + b']"' if b":" in ip else ip
            elem = b"for=" + node + b";proto=" + lst.scheme
            if head.host:
                elem += b';host="' + head.host.replace(b'"', b"") + b'"'
            if self.trusted and head.forwarded:
                elem = head.forwarded + b", " + elem
            parts += (b"Forwarded: ", elem, b"\r\n")
        elif self.trusted and head.forwarded is not None:
            parts += (b"Forwarded: ", head.forwarded, b"\r\n")
        if lst.fw_via:
            parts += (b"Via: ", b"1.0 pyvs" if head.version == "1.0" else lst.via_value, b"\r\n")
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if head.upgrade and head.upgrade_proto:
            parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade_proto, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

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

    def upstream_write_blocked(self, blocked: bool) -> None:
        self.up_write_blocked = blocked
        if blocked:
            self._pause_reading()
        else:
            self._maybe_resume()

    def upstream_timeout(self, conn: UpstreamConn) -> None:
        if conn is self.connecting:
            self.worker.stats.connect_timeouts += 1
            if self.connect_task is not None:
                self.connect_task.cancel()  # -> _connect_done: retry elsewhere or 504
            return
        if conn is not self.up:
            conn.close()
            return
        ex = self.active
        self.worker.stats.server_timeouts += 1
        log.warning(
            "server %s/%s timed out", conn.server.backend.name, conn.server.name,
        )
        self.up = None
        self._server_done(ex)
        conn.abort()
        if self.resp_started or self.tunnel:
            self._abort()
        else:
            self._send_error(504, close=ex is None or not ex.ended)

    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None:
        if conn is self.connecting:
            return  # _connect_done handles it
        if conn is not self.up:
            return
        ex = self.active
        self.up = None
        self._server_done(ex)
        if self.tunnel:
            self._close()
            return
        if self.resp_started:
            if self.resp_until_close and exc is None:
                self._response_complete(b"", reusable=False, conn=None)
            else:
                self.worker.stats.truncated_responses += 1
                log.warning("server %s/%s closed mid-response", conn.server.backend.name, conn.server.name)
                self._abort()
            return
        assert ex is not None and ex.backend is not None
        retry_ok = (
            conn.bytes_in == 0
            and ex.head.method in IDEMPOTENT
            and not ex.head.has_body
            and ex.attempts <= ex.backend.retries
            and not isinstance(exc, ProtocolError)
        )
        if retry_ok:
            # Typically a pooled connection the server closed as we reused it.
            self.worker.stats.retries += 1
            self._attempt(ex)
            return
        conn.server.responses_5xx += 1
        if exc is not None:
            log.warning("server %s/%s failed: %s", conn.server.backend.name, conn.server.name, exc)
        self._send_error(502, close=True)

    def _server_done(self, ex: Exchange | None) -> None:
        if ex is not None and ex.server is not None:
            server = ex.server
            server.active -= 1
            server.backend.scheduler.released(server.target)

    # ----------------------------------------------------------- responses
    def on_response_head(self, rh: ResponseHead) -> None:
        ex = self.active
        t = self.transport
        if ex is None or t is None or self.closed:
            return
        status = rh.status
        head = ex.head
        client11 = head.version == "1.1"
        if status < 200 and status != 101:
            self.resp_interim = True
            if client11:
                self.wbuf.append(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, rh.reason, rh.fields))
                self.flush_client()
            return
        self.resp_started = True
        self.resp_status = status
        self.resp_keepalive = rh.keep_alive
        if status >= 500 and ex.server is not None:
            ex.server.responses_5xx += 1
        close = self.close_after or not head.keep_alive or not ex.ended or self.worker.draining
        framing: bytes = b""
        self.resp_chunked = False
        self.resp_until_close = False
        if status == 101:
            if not head.upgrade:
                self._abort()
                return
            framing = b"Connection: upgrade\r\nUpgrade: " + rh.upgrade_proto + b"\r\n"
            self.tunnel = True
            close = False
        elif head.method == b"HEAD" or status == 204 or status == 304:
            if rh.content_length is not None and status != 204:
                framing = b"Content-Length: %d\r\n" % rh.content_length
            elif rh.chunked and client11 and status != 204:
                framing = b"Transfer-Encoding: chunked\r\n"
        elif rh.content_length is not None:
            framing = b"Content-Length: %d\r\n" % rh.content_length
        else:
            self.resp_until_close = not rh.chunked
            if client11:
                self.resp_chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                close = True
        if head.upgrade and status != 101:
            close = True  # the client may already be sending the other protocol
        if close:
            framing += b"Connection: close\r\n"
        elif not client11:
            framing += b"Connection: keep-alive\r\n"
        self.close_after = close
        self.wbuf.append(b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, rh.reason, rh.fields, framing))
        if self.tunnel:
            self.flush_client()
            self._start_tunnel()
            return
        up = self.up
        if up is not None:
            backend = up.server.backend
            up.deadline = self.loop.time() + backend.server_timeout
            if backend.total_timeout:
                up.deadline = min(up.deadline, ex.started + backend.total_timeout)

    def on_response_body(self, data: bytes) -> None:
        if self.closed:
            return
        if self.tunnel:
            assert self.transport is not None
            self.transport.write(data)
        elif self.resp_chunked:
            self.wbuf += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.wbuf.append(data)

    def flush_client(self) -> None:
        """Write what the last server read produced (called after each parse)."""
        if self.wbuf:
            if self.transport is not None and not self.closed:
                self.transport.writelines(self.wbuf)
            self.wbuf.clear()

    def on_response_end(self, trailers: bytes) -> None:
        if self.resp_interim:
            self.resp_interim = False
            return
        if self.tunnel:
            return  # llhttp ends the 101 message; the tunnel goes on
        up = self.up
        ex = self.active
        reusable = ex is not None and ex.ended and self.resp_keepalive and not self.resp_until_close
        if up is not None:
            self.up = None
            self._server_done(ex)
        self._response_complete(trailers, reusable=reusable, conn=up)

    def _response_complete(self, trailers: bytes, *, reusable: bool, conn: UpstreamConn | None) -> None:
        if self.resp_chunked:
            self.wbuf.append(b"0\r\n" + trailers + b"\r\n")
        self.flush_client()
        now = self.loop.time()
        if conn is not None:
            if reusable:
                conn.release(now)
            else:
                conn.close()
        self._exchange_done(self.resp_status, now)

    def _exchange_done(self, status: int, now: float) -> None:
        stats = self.worker.stats
        stats.requests += 1
        stats.count_status(status)
        ex = self.active
        if ex is not None and ex.server is not None:
            ex.server.backend.scheduler.observed(ex.server.target, now - ex.started, status < 500)
        self.active = None
        self.resp_started = False
        if self.close_after or self.closed:
            self._close()
            return
        if self.pending:
            nxt = self.pending.popleft()
            self.active = nxt
            self._start(nxt)
            if self.closed:
                return
        else:
            self.parsing = None if self.parsing is ex else self.parsing
            self.idle_wait = True
            self.deadline = now + self.lst.client_timeout
        self._maybe_resume()

    # ------------------------------------------------------------- tunnel
    def _start_tunnel(self) -> None:
        up = self.up
        if up is None or up.transport is None:
            self._close()
            return
        up.deadline = 0.0
        self.deadline = 0.0
        self.worker.stats.upgrades += 1
        buf = self.tunnel_buf or []
        self.tunnel_buf = []
        if buf:
            up.transport.writelines(buf)
        self._maybe_resume()

    # ------------------------------------------------------------ helpers
    def _send_error(self, status: int, *, close: bool) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if self.resp_started:
            self._abort()
            return
        ex = self.active
        if (ex is not None and ex.head.version != "1.1") or self.close_after:
            close = True
        self.close_after = close or self.close_after
        self.resp_status = status
        self.resp_chunked = False
        t.write(error_response(status, close))
        if self.up is not None:
            conn, self.up = self.up, None
            self._server_done(ex)
            conn.abort()
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
            self._server_done(self.active)
            up.abort()
        if self.connecting is not None:
            self.connecting = None
            if self.connect_task is not None:
                self.connect_task.cancel()
        self.active = None
        self.pending = None
        t = self.transport
        if t is not None and not self.closed:
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
        if self.up_write_blocked or self.client_write_blocked or self.pending:
            return
        ex = self.active
        if ex is not None and ex.buf is not None:
            return
        if self.tunnel_buf is not None and not self.tunnel:
            return
        self.reading_paused = False
        assert self.transport is not None
        self.transport.resume_reading()

    def drain(self) -> None:
        """Graceful stop: finish the current exchange, then close."""
        self.close_after = True
        if self.active is None and self.up is None:
            self._close()

    def _close(self) -> None:
        self.flush_client()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _abort(self) -> None:
        """Close at once: whatever the client got is visibly incomplete."""
        up = self.up
        if up is not None:
            self.up = None
            self._server_done(self.active)
            up.abort()
        self.wbuf.clear()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

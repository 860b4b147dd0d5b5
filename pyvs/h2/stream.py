"""One HTTP/2 stream: the downstream of its own exchange.

Theory of operation
-------------------
A stream implements :class:`pyvs.l7.downstream.Downstream` exactly where an
:class:`~pyvs.l7.h1conn.H1Connection` does, so the exchange, the router, the filters
and the HTTP/1.1 server pool serve it unchanged. What differs is framing:

- the request head is rebuilt as HTTP/1.1 text (:mod:`pyvs.h2.headers`) and parsed
  by the HTTP/1 parser; a body without a length is chunk-encoded on its way;
- :meth:`present` turns the server's response head into h2 fields and asks the
  upstream connection for the body *without* HTTP/1 framing (``DECODE`` for a
  chunked body, ``REBUILT`` otherwise);
- body bytes the upstream connection gathers in ``wbuf`` move to ``out`` and leave
  as DATA frames as far as the client's flow-control window allows.

Backpressure, per stream. Response: when more than ``http2_limits.buffer`` bytes wait
for the client's window, the stream's server connection stops being read
(``client_write_blocked``, as a full client socket does for HTTP/1), and is read again
once half of it has gone: a slow stream never stalls the others, a fast server never
fills memory. Request: body bytes are acknowledged (WINDOW_UPDATE) only once they
have been handed to the server connection; while the exchange holds them (no server
yet) or the server does not read (``up_write_blocked``), acknowledgements wait, and
the client's window closes.

``transport`` is None on purpose: the short path's whole-response shortcut writes
HTTP/1 bytes to the downstream's transport and steps aside when there is none.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from pyvs.h2.headers import Fields, reply_parts, request_block, response_fields, trailer_lines
from pyvs.http.errors import ProtocolError
from pyvs.http.h1 import (
    CHUNKED,
    IDEMPOTENT,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    RequestHead,
    ResponseHead,
    parse_request_head,
)
from pyvs.http.responses import error_response
from pyvs.l7.exchange import Exchange
from pyvs.runtime.stats import LATENCY_BOUNDS, NBUCKETS, PAIR_BYTES, PAIR_LEN, PAIR_RETRIES, PAIR_SUM
from pyvs.upstream.connection import DECODE, REBUILT, UpstreamConn

if TYPE_CHECKING:
    import asyncio

    from pyvs.h2.conn import H2ServerConnection

# RST_STREAM codes (RFC 9113 7)
NO_ERROR = 0
INTERNAL_ERROR = 2
REFUSED_STREAM = 7


class H2Stream:
    """One request/response of an HTTP/2 connection (see the module docstring)."""

    transport: asyncio.Transport | None = None
    close_after = False
    inbuf = b""

    def __init__(self, conn: H2ServerConnection, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.tls = conn.tls  # for the access log (TLS facts of the connection)
        self.req_ended = False
        self.client_write_blocked = False
        self.reading_paused = False
        self.up_write_blocked = False
        self.deadline = 0.0
        self.wbuf: list[bytes] = []
        self.out = bytearray()  # response body bytes waiting for the client's window
        self.end_pending = False  # END_STREAM goes once ``out`` is empty
        self.out_ended = False  # END_STREAM or RST_STREAM sent (or received): no more frames
        self.done = False  # the exchange is over
        self.unacked = 0  # request bytes received, not yet given back to the client's window
        self.chunked = False
        self.body_len = 0
        self.trailers = b""  # request trailers, as chunked trailer lines
        # Response trailers for the client (from an HTTP/2 server: pyvs/h2/upstream.py)
        self.trailers_out: list[tuple[bytes, bytes]] | None = None
        self.resp_until_close = False
        self.ended_head: RequestHead | None = None
        self.ex = ex = Exchange(conn.lst, self)
        t = conn.template  # the client's facts, computed once per connection
        ex.client_ip, ex.trusted, ex.xff_line, ex.fw_plain = t.client_ip, t.trusted, t.xff_line, t.fw_plain
        if conn.view_type is not None:
            ex.view = conn.view_type(conn.tls)
        v = ex.view
        v.client_ip, v.local_ip, v.scheme = t.view.client_ip, t.view.local_ip, t.view.scheme

    # ------------------------------------------------------------ request
    def start(self, fields: Fields, end_stream: bool) -> None:
        conn = self.conn
        self.req_ended = end_stream
        head: RequestHead | None = None
        try:
            block, self.chunked = request_block(fields, end_stream)
            if len(block) > conn.lst.max_head:
                raise ProtocolError("request head too large", 431)
            head = parse_request_head(block)
            if head.fields > conn.max_headers:
                raise ProtocolError("too many header fields", 431)
            if head.method == b"CONNECT":
                raise ProtocolError("CONNECT is not proxied", 405)
            tls = self.tls
            if tls is not None and tls.misdirected(head.host):  # SNI/Host rule (pyvs/tls/conn.py)
                raise ProtocolError("Host is not covered by the certificate of this connection", 421)
            max_body = conn.max_body
            if max_body and head.framing == LENGTH and head.length > max_body:
                raise ProtocolError("request body too large", 413)
        except ProtocolError as exc:
            self._refuse(exc, head)
            return
        if not end_stream:
            self.deadline = conn.loop.time() + conn.lst.client_timeout
        self.ex.start(head, end_stream and bool(head.host) and head.method in IDEMPOTENT)

    def on_data(self, data: bytes, flow: int) -> None:
        conn = self.conn
        if self.done or self.req_ended:
            conn.ack(self.sid, flow)  # an answered request: its body is read and dropped
            return
        n = len(data)
        if n:
            self.body_len += n
            max_body = conn.max_body
            if max_body and self.body_len > max_body:
                conn.ack(self.sid, flow)
                self.send_error(413, close=True)
                return
            self.deadline = conn.loop.time() + conn.lst.client_timeout
            self.ex.request_body(b"%x\r\n%b\r\n" % (n, data) if self.chunked else data)
        if self.reading_paused:
            self.unacked += flow
        else:
            conn.ack(self.sid, flow)

    def on_trailers(self, fields: Fields) -> None:
        try:
            self.trailers = trailer_lines(fields)
        except ProtocolError as exc:
            if not self.done:
                self._refuse(exc, None)

    def on_end(self) -> None:
        if self.req_ended or self.done:
            return
        self.req_ended = True
        self.deadline = 0.0
        ex = self.ex
        if self.chunked:
            ex.request_body(b"0\r\n" + self.trailers + b"\r\n")
        ex.request_ended()

    def on_reset(self) -> None:
        """The client reset the stream (or the connection is gone)."""
        self.out_ended = True
        if self.done:
            self.conn.forget(self)
            return
        ex = self.ex
        ex.cancel_connect()
        ex.drop_upstream()
        if ex.head is not None and ex.head is not self.ended_head:
            self._ended(ex.resp_status if ex.resp_started else 499, self.conn.loop.time(), "client_closed")
        self._finish()

    def on_deadline(self, now: float) -> None:
        """The client stopped sending its body or stopped taking the response."""
        self.conn.worker.stats.client_timeouts += 1
        if self.done:  # answered, but the client never opened its window for the rest
            self.out.clear()
            self.end_pending = False
            if not self.out_ended:
                self.out_ended = True
                self.conn.reset(self.sid, INTERNAL_ERROR)
            self.conn.forget(self)
            return
        if not self.ex.resp_started and not self.req_ended:
            self.send_error(408, close=True)
        else:
            self.abort()

    def _refuse(self, exc: ProtocolError, head: RequestHead | None) -> None:
        """A request refused before its exchange started (as H1Connection._protocol_error)."""
        conn = self.conn
        w = conn.worker
        w.stats.bad_requests += 1
        ex = self.ex
        ex.cancel_connect()
        ex.drop_upstream()
        data = error_response(exc.status, False)
        ex.resp_status, ex.resp_head, ex.resp_bytes = exc.status, None, len(data)
        ex.head, ex.route, ex.backend, ex.last_server, ex.attempts = head, None, None, None, 0
        ex.started = conn.loop.time()
        self._reply(data)
        self._ended(exc.status, conn.loop.time(), "bad_request")
        w.stats.count_status(exc.status)
        self._finish()

    # ----------------------------------------------------------- response
    def present(self, ex: Exchange, rh: ResponseHead) -> int:
        """The response head as h2 fields; the body comes without HTTP/1 framing."""
        framing = rh.framing
        if rh.status == 101 or (rh.codings is not None and framing != NO_BODY):
            ex.resp_started = False  # nothing was sent: the exchange answers 502
            raise ProtocolError("a response HTTP/2 cannot carry (101 or a transfer coding)", 502)
        req = ex.head
        # Nothing will follow the head: END_STREAM on the HEADERS frame (a gRPC
        # "trailers-only" answer must be one frame).
        end = framing == NO_BODY or (framing == LENGTH and not rh.length) or (req is not None and req.method == b"HEAD")
        self.resp_until_close = framing == UNTIL_CLOSE
        self.conn.send_headers(self.sid, response_fields(rh.block), end)
        if end:
            self.out_ended = True
        return DECODE if framing == CHUNKED else REBUILT

    def on_interim(self, rh: ResponseHead) -> None:
        if not self.out_ended and rh.status != 101:
            self.conn.send_headers(self.sid, response_fields(rh.block), False)
            self.conn.flush()

    def flush_client(self) -> None:
        wbuf = self.wbuf
        if wbuf:
            out = self.out
            for piece in wbuf:
                out += piece
            wbuf.clear()
        if not self.out_ended:
            self.send_out()
            self.conn.flush()

    def send_out(self) -> None:
        """DATA frames as far as the windows allow; END_STREAM when all is sent."""
        out = self.out
        conn = self.conn
        sent = 0
        if out and not conn.write_blocked:
            # The last bytes of a response without trailers carry END_STREAM themselves.
            end = self.end_pending and not self.trailers_out
            sent = conn.send_data(self.sid, out, end)
            if sent:
                if end and sent == len(out):
                    out.clear()
                    self.end_pending = False
                    self.out_ended = True
                    if self.done:
                        conn.forget(self)
                        return
                else:
                    del out[:sent]
        if not out:
            if self.end_pending:
                self.end_pending = False
                self.out_ended = True
                trailers = self.trailers_out
                if trailers:
                    conn.send_headers(self.sid, trailers, True)
                else:
                    conn.end_stream(self.sid)
                if self.done:
                    conn.forget(self)
                    return
        if out:  # waiting for the client's window: bounded by the client timeout, renewed by progress
            if sent or not self.deadline:
                self.deadline = conn.loop.time() + conn.lst.client_timeout
        elif self.req_ended and self.deadline:
            self.deadline = 0.0
        limit = conn.buffer_limit
        if self.client_write_blocked:
            if len(out) <= limit >> 1:
                self._hold_server(False)
        elif len(out) > limit:
            self._hold_server(True)

    def _hold_server(self, hold: bool) -> None:
        """Stop (or restart) reading the server while the client's window is closed."""
        self.client_write_blocked = hold
        up = self.ex.up
        conn = self.conn
        if hold:
            if up is not None and up.transport is not None:
                up.transport.pause_reading()
                up.deadline = 0.0
            self.deadline = conn.loop.time() + conn.lst.client_timeout
        else:
            if up is not None and up.transport is not None:
                up.transport.resume_reading()
                rt = self.ex.route
                up.deadline = conn.loop.time() + (rt.server_timeout if rt is not None else 60.0)
            # (the stream's own deadline stays: send_out renews or clears it)

    def response_ended(self) -> None:
        wbuf = self.wbuf
        if wbuf:
            for piece in wbuf:
                self.out += piece
            wbuf.clear()
        if not self.out_ended:
            self.end_pending = True
            self.send_out()
        self.conn.flush()  # (a bodiless response's HEADERS, END_STREAM set, wait here too)

    def exchange_done(self, status: int, now: float) -> None:
        stats = self.conn.worker.stats
        stats.requests += 1
        if 200 <= status < 300:
            stats.responses_2xx += 1
        else:
            stats.count_status(status)
        self._ended(status, now)
        self._finish()

    def whole_response_done(self, now: float) -> None:
        self.exchange_done(self.ex.resp_status, now)  # (not reached: a stream has no transport)

    def send_error(self, status: int, *, close: bool, data: bytes | None = None) -> None:
        """Answer the request ourselves (errors, sorry pages, filter replies)."""
        if self.done:
            return
        ex = self.ex
        if ex.resp_started or self.out_ended:
            self.abort()
            return
        data = data if data is not None else error_response(status, False)
        ex.resp_status = status
        ex.resp_head = None
        ex.resp_bytes = len(data)
        ex.drop_upstream()
        self._reply(data)
        self.exchange_done(status, self.conn.loop.time())

    def _reply(self, data: bytes) -> None:
        fields, body = reply_parts(data)
        self.wbuf.clear()
        self.conn.send_headers(self.sid, fields, not body)
        if body:
            self.out += body
            self.end_pending = True
            self.send_out()
        else:
            self.out_ended = True
        self.conn.flush()

    def abort(self) -> None:
        """End the stream at once with RST_STREAM: the client sees it incomplete."""
        if self.done:
            return
        ex = self.ex
        ex.drop_upstream()
        if ex.head is not None and ex.head is not self.ended_head:
            self.ended_head = ex.head
            self._ended(ex.resp_status if ex.resp_started else 0, self.conn.loop.time(), "aborted")
        self.wbuf.clear()
        self.out.clear()
        self.end_pending = False
        if not self.out_ended:
            self.out_ended = True
            self.conn.reset(self.sid, INTERNAL_ERROR)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        if not self.out:  # (bytes still waiting for the window keep their deadline)
            self.deadline = 0.0
        self.ex.finished()
        if self.out_ended:
            self.conn.forget(self)

    # ------------------------------------------- backpressure and the rest
    def pause_reading(self) -> None:
        self.reading_paused = True

    def maybe_resume(self) -> None:
        if not self.reading_paused or self.up_write_blocked or self.ex.req_buf is not None:
            return
        self.reading_paused = False
        n = self.unacked
        if n:
            self.unacked = 0
            self.conn.ack(self.sid, n)
            self.conn.flush()

    def in_tunnel(self) -> bool:
        return False

    def response_until_close(self) -> bool:
        return self.resp_until_close

    def on_tunnel_data(self, data: bytes) -> None:
        self.abort()  # no tunnel over a stream: present() refuses 101

    def upstream_eof(self, conn: UpstreamConn) -> None:
        self.abort()

    def tunnel_ended(self) -> None:
        self.abort()

    def _ended(self, status: int, now: float, term: str = "") -> None:
        """The end of a request: the listener's counters, the access log (as H1Connection._ended)."""
        ex = self.ex
        conn = self.conn
        traffic = conn.traffic
        t = traffic.get(ex.last_server)
        if t is None:
            t = traffic[ex.last_server] = [0.0] * PAIR_LEN
        if ex.head is not None:
            dur = now - ex.started
            if ex.attempts > 1:
                t[PAIR_RETRIES] += ex.attempts - 1
        else:
            dur = 0.0
        t[status // 100 * NBUCKETS + bisect_left(LATENCY_BOUNDS, dur)] += 1
        t[PAIR_SUM] += dur
        t[PAIR_BYTES] += ex.resp_bytes
        obs = conn.obs
        if obs is not None:
            obs.ended(ex, status, now, dur, term)

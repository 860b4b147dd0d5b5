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

``transport`` is None on purpose: the HTTP/1 whole-response shortcut writes HTTP/1
bytes to the downstream's transport and steps aside when there is none; the stream's
own exchange (:class:`H2Exchange`) has an HTTP/2 one instead: a small 2xx response
read in one piece becomes HEADERS and one DATA frame at once. A finished stream goes
back to its connection's spares with its exchange, and the next stream reuses both
(``reinit``), as an HTTP/1.1 connection reuses its exchange; only a stream nothing
refers to any more (no server connection, connect or queue place) is kept.

The request text is cached per connection by the decoded field list: the HPACK
decoder hands out the same list for a repeated block (pyvs.h2.headerblock), so a
client repeating a request skips ``request_block``; the list is kept in the cache,
so its ``id`` cannot be reused while the entry lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from pyvs.h2.codec import DATA, END_HEADERS, END_STREAM, HEADERS, CodecStream, pack_header
from pyvs.h2.headerblock import HEAD_CACHE, encode_head
from pyvs.h2.headers import Fields, reply_parts, request_block, trailer_fields, trailer_lines
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
from pyvs.l7.h1conn import end_request
from pyvs.upstream.connection import DECODE, REBUILT, UpstreamConn

if TYPE_CHECKING:
    import asyncio

    from pyvs.h2.conn import H2ServerConnection

# RST_STREAM codes (RFC 9113 7)
NO_ERROR = 0
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
REFUSED_STREAM = 7


class H2Exchange(Exchange):
    """The exchange of an HTTP/2 stream: the whole-response shortcut in HTTP/2 terms."""

    __slots__ = ()

    def on_whole_response(self, conn: UpstreamConn, rh: ResponseHead, data: bytes) -> bool:
        """A 2xx response read whole in one piece (Content-Length) for a request the
        client has finished: HEADERS and one DATA frame (END_STREAM) straight from the
        read, the server connection back to the pool, the stream done -- what the
        general path (on_response_head, present, the body, on_response_end,
        response_ended) does in steps. False when the body does not fit the client's
        windows and frame size at once, or anything else needs the general path."""
        st: H2Stream = self.down  # type: ignore[assignment]  # (not cast(): a call per request)
        status = rh.status
        n = rh.length
        h2c = st.conn
        if not 200 <= status < 300 or self.up is not conn or not st.req_ended or st.lclosed or st.wbuf \
                or st.out or rh.codings is not None or h2c.write_blocked or n > st.sw or n > h2c.swin \
                or n > h2c.peer_frame:
            return False
        self.resp_status = status
        self.resp_head = rh
        self.resp_bytes = len(data)
        self.head_at = now = self.loop.time()
        server = self.server
        if server is not None:
            server.consecutive_errors = 0
            if server.passive_word:  # shared by the workers (passive health configured)
                server.passive_ok()
        # HEADERS and DATA(END_STREAM) queued as the codec's send_head and send_last would
        block = HEAD_CACHE.get(rh.block) or encode_head(rh.block)
        k = len(block)
        sid = st.sid
        if k > h2c.peer_frame:
            h2c.send_head(st, rh.block, not n)  # (CONTINUATION frames needed: rare)
            if n:
                h2c.send_last(st, data[len(data) - n :])
        elif n:
            h2c.wq += (pack_header(k >> 8, k & 0xFF, HEADERS, END_HEADERS, sid), block,
                       pack_header(n >> 8, n & 0xFF, DATA, END_STREAM, sid), data[len(data) - n :])
            st.sw -= n
            h2c.swin -= n
        else:
            h2c.wq += (pack_header(k >> 8, k & 0xFF, HEADERS, END_HEADERS | END_STREAM, sid), block)
        st.lclosed = st.out_ended = True
        self.up = None
        self.server_done(True)
        conn.release(now)
        # st.exchange_done(status, now), inline: counters, the end of the request, the stream
        stats = self.worker.stats
        stats.requests += 1
        stats.responses_2xx += 1
        st._ended(status, now)
        st.done = True
        st._deadline = 0.0
        self.finished()
        h2c.forget(st)
        if not h2c.flush_pending:  # (the other streams of this read have asked already)
            h2c.flush()
        return True

    def on_trailers(self, lines: bytes) -> None:
        """A chunked response's trailers: the stream ends with them as HEADERS."""
        fields = trailer_fields(lines)
        if fields:
            cast("H2Stream", self.down).trailers_out = fields


class H2Stream(CodecStream):
    """One request/response of an HTTP/2 connection (see the module docstring)."""

    # Slots (here, in CodecStream and in the connection's classes): CPython 3.11 keeps
    # a plain object's attributes in its fast layout only up to 29 names per class;
    # past that every attribute access of the object goes through a dict (a stream
    # had 29: one more cost ~3% of the h2 request path, bench/h2_micro.py).
    __slots__ = ("_deadline", "body_len", "chunked", "client_write_blocked", "conn", "done", "end_pending",
                 "ended_head", "ex", "expect", "obs", "out", "out_ended", "reading_paused", "req_ended",
                 "resp_until_close", "swept", "tls", "traffic", "trailers", "trailers_out", "unacked",
                 "up_write_blocked", "wbuf")
    transport: asyncio.Transport | None = None
    close_after = False
    inbuf = b""
    swept: bool
    _deadline: float

    # The stream's timeout. A live stream joins the worker's sweeper only once a
    # deadline is set: most streams are answered before any of theirs runs, and an
    # add and a discard per stream were ~2% of the Python cost of an h2 request.
    # (Zero is written to ``_deadline`` directly on the hot paths; a stream the
    # connection has forgotten never joins, as before.)
    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        if value and not self.swept:
            conn = self.conn
            if conn.streams.get(self.sid) is self:
                self.swept = True
                conn.worker.sweeper.add(self)

    def __init__(self, conn: H2ServerConnection, sid: int, end: bool) -> None:
        self.conn = conn
        self.swept = False  # in the worker's sweeper (until the connection forgets the stream)
        self.tls = conn.tls  # for the access log (TLS facts of the connection)
        self.traffic = conn.traffic  # (read by _ended)
        self.obs = conn.obs
        self.wbuf: list[bytes] = []
        self.out = bytearray()  # response body bytes waiting for the client's window
        self.ex = ex = H2Exchange(conn.lst, self)
        t = conn.template  # the client's facts, computed once per connection
        ex.client_ip, ex.trusted, ex.xff_line, ex.fw_plain = t.client_ip, t.trusted, t.xff_line, t.fw_plain
        if conn.view_type is not None:
            ex.view = conn.view_type(conn.tls)
        v = ex.view
        v.client_ip, v.local_ip, v.scheme = t.view.client_ip, t.view.local_ip, t.view.scheme
        self.reinit(sid, end)

    def reinit(self, sid: int, end: bool) -> None:
        """The per-stream state, for a new stream or for a finished one taken again
        from the connection's spares (its exchange is reused as an HTTP/1.1
        connection reuses its own from request to request)."""
        conn = self.conn
        self.sid = sid
        # Protocol state (pyvs.h2.codec.CodecStream)
        self.sw = conn.peer_window
        self.rw = conn.stream_window
        self.rpend = 0
        self.rdone = end
        self.lclosed = False
        self.req_ended = False
        self.client_write_blocked = False
        self.reading_paused = False
        self.up_write_blocked = False
        self._deadline = 0.0
        self.end_pending = False  # END_STREAM goes once ``out`` is empty
        self.out_ended = False  # END_STREAM or RST_STREAM sent (or received): no more frames
        self.done = False  # the exchange is over
        self.unacked = 0  # request bytes received, not yet given back to the client's window
        self.chunked = False
        self.body_len = 0
        self.expect = -1  # the request's Content-Length, which the DATA frames must match (RFC 9113 8.1.1)
        self.trailers = b""  # request trailers, as chunked trailer lines
        # Response trailers for the client (from an HTTP/2 server: pyvs/h2/upstream.py)
        self.trailers_out: list[tuple[bytes, bytes]] | None = None
        self.resp_until_close = False
        self.ended_head: RequestHead | None = None
        # A reused stream starts empty: bytes its previous request left for a window
        # that never opened must not be taken for this one's.
        if self.out:
            self.out.clear()
        if self.wbuf:
            self.wbuf.clear()

    # ------------------------------------------------------------ request
    def start(self, fields: Fields, end_stream: bool, too_large: bool = False) -> None:
        """The request's fields (``too_large``: over SETTINGS_MAX_HEADER_LIST_SIZE)."""
        conn = self.conn
        self.req_ended = end_stream
        head: RequestHead | None = None
        try:
            if too_large:
                raise ProtocolError("request head too large", 431)
            cache = conn.req_cache  # the same fields (a remembered HPACK block): the same text
            hit = cache.get(id(fields))
            if hit is not None and hit[0] is fields and hit[1] == end_stream:
                block, self.chunked = hit[2], hit[3]
            else:
                block, self.chunked = request_block(fields, end_stream)
                if len(cache) >= 64:
                    cache.clear()
                cache[id(fields)] = (fields, end_stream, block, self.chunked)
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
            if head.framing == LENGTH:
                max_body = conn.max_body
                if max_body and head.length > max_body:
                    raise ProtocolError("request body too large", 413)
                if end_stream and head.length:
                    raise ProtocolError("Content-Length without the body", 400)
                self.expect = head.length
        except ProtocolError as exc:
            self._refuse(exc, head)
            return
        if not end_stream:
            self.deadline = conn.loop.time() + conn.lst.client_timeout
        self.ex.start(head, end_stream and bool(head.host) and head.method in IDEMPOTENT)

    def on_data(self, data: bytes, flow: int) -> None:
        conn = self.conn
        if self.done or self.req_ended:
            conn.ack(self, flow)  # an answered request: its body is read and dropped
            return
        n = len(data)
        if n:
            self.body_len += n
            max_body = conn.max_body
            if max_body and self.body_len > max_body:
                conn.ack(self, flow)
                self.send_error(413, close=True)
                return
            expect = self.expect
            if expect >= 0 and self.body_len > expect:
                conn.ack(self, flow)
                self.abort(PROTOCOL_ERROR)  # more than Content-Length: malformed
                return
            self.deadline = conn.loop.time() + conn.lst.client_timeout
            self.ex.request_body(b"%x\r\n%b\r\n" % (n, data) if self.chunked else data)
        if self.reading_paused:
            self.unacked += flow
        else:
            conn.ack(self, flow)

    def on_trailers(self, fields: Fields) -> None:
        try:
            self.trailers = trailer_lines(fields)
        except ProtocolError:
            self.abort(PROTOCOL_ERROR)  # malformed (RFC 9113 8.1.1): a stream error, whatever was answered

    def on_end(self) -> None:
        if self.req_ended or self.done:
            return
        if 0 <= self.expect != self.body_len:
            self.abort(PROTOCOL_ERROR)  # fewer bytes than Content-Length: malformed
            return
        self.req_ended = True
        self._deadline = 0.0
        ex = self.ex
        if self.chunked:
            ex.request_body(b"0\r\n" + self.trailers + b"\r\n")
        ex.request_ended()

    def on_reset(self) -> None:
        """The client reset the stream (or the connection is gone)."""
        self.out_ended = True
        self.out.clear()  # nothing more goes to the client on it
        self.end_pending = False
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
                self.conn.reset(self, INTERNAL_ERROR)
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
        self.conn.send_head(self, rh.block, end)
        if end:
            self.out_ended = True
        return DECODE if framing == CHUNKED else REBUILT

    def on_interim(self, rh: ResponseHead) -> None:
        if not self.out_ended and rh.status != 101:
            self.conn.send_head(self, rh.block, False)
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
            sent = conn.send_data(self, out, end)
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
                    conn.send_fields(self, trailers, True)
                else:
                    conn.end_stream(self)
                if self.done:
                    conn.forget(self)
                    return
        if out:  # waiting for the client's window: bounded by the client timeout, renewed by progress
            if sent or not self.deadline:
                self.deadline = conn.loop.time() + conn.lst.client_timeout
        elif self.req_ended and self._deadline:
            self._deadline = 0.0
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
        self.conn.send_fields(self, fields, not body)
        if body:
            self.out += body
            self.end_pending = True
            self.send_out()
        else:
            self.out_ended = True
        self.conn.flush()

    def abort(self, code: int = INTERNAL_ERROR) -> None:
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
            self.conn.reset(self, code)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        if not self.out:  # (bytes still waiting for the window keep their deadline)
            self._deadline = 0.0
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
            self.conn.ack(self, n)
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

    _ended = end_request  # the listener's counters, the access log (as H1Connection)

"""The HTTP/1 client connection: one asyncio protocol object per accepted socket.

Theory of operation
-------------------
The client byte stream alternates between two phases: a request *head*, found by its
terminating empty line and digested by :func:`pyvs.http.h1.parse_request_head`, and
a request *body*, delimited by a framer (:mod:`pyvs.http.framing`) and handed to the
exchange as raw byte ranges. Once a request has been read completely the connection
waits (``WAIT``) for its response; bytes arriving meanwhile are pipelined requests,
kept in ``inbuf`` with reading paused, and parsed when the response is done.

This class knows HTTP/1 and nothing else: phases, pipelining, the PROXY header,
deadlines, backpressure, drain, and how a response is framed for *this* client
(:meth:`present`: byte for byte for an HTTP/1.1 keep-alive client, a rebuilt head
with ``Connection: close`` or chunked framing otherwise). What happens to a request
-- route, filters, server, retries -- is the :class:`pyvs.l7.exchange.Exchange`'s
business; the connection owns one exchange and reuses it for every request.

Backpressure both ways: a full server socket pauses reading from the client; a full
client socket pauses reading from the server. A response that cannot be completed
(the server died mid-body, a timeout after the head was sent) ends with the client
connection closed before the message is complete, so the client can never take a
truncated body for a whole one. A client whose response ends with the close (an
HTTP/1.0 client of a chunked or unframed body) cannot see the gap in the framing:
for it :meth:`abort` resets the connection (SO_LINGER 0: an RST, not a FIN; uvloop's
``transport.abort()`` alone sends a FIN, tests/integration/test_truncation.py checks
the wire).

Limits (docs/security.md): ``max_header_size`` and ``max_headers`` (431), ``max_body``
(413, from Content-Length before anything is sent; a chunked body is counted by its
framer), ``max_client_connections`` (counted at accept, for the instance: clientcap.py). A head that can
never complete -- bare LF line ends, an HTTP/0.9 request line -- is answered 400 at
once instead of waiting for the request timeout.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
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
    to_origin_form,
)
from pyvs.http.responses import error_response
from pyvs.l7.exchange import Exchange
from pyvs.runtime.stats import PAIR_LEN, PAIR_RETRIES, observe
from pyvs.upstream.connection import DECODE, ENCODE, RAW, REBUILT, UpstreamConn

if TYPE_CHECKING:
    from typing import Any, Protocol

    from pyvs.l7.listener import ListenerRuntime
    from pyvs.logs.access import Observer
    from pyvs.tls.conn import TlsFacts

    class Ending(Protocol):
        """What :func:`end_request` reads of the downstream whose request ended."""

        ex: Exchange
        traffic: dict[Any, list[float]]
        obs: Observer | None

# Client connection phases
HEAD = 0  # waiting for (the rest of) a request head
BODY = 1  # reading a request body
WAIT = 2  # request complete, response under way
TUNNEL = 3  # after 101: raw bytes both ways
PROXY = 4  # accept_proxy: waiting for the PROXY protocol header
LINGER = 5  # answered with an error while the client still sends: read and discard, then close
LINGER_TIME = 2.0  # seconds of lingering close at most (nginx lingering_timeout is 5 s, _time 30 s)

# SO_LINGER {on, 0 s}: close() resets the connection (RST) instead of ending it (FIN).
_LINGER_RESET = struct.pack("ii", 1, 0)
# A line end that is not CRLF: such a head never shows CRLF CRLF, so it is refused as
# soon as it is seen (only looked for while a head is incomplete).
_BARE_LF = re.compile(rb"(?<!\r)\n")

def _incomplete_head_error(data: bytes) -> ProtocolError | None:
    """The error for a head without CRLF CRLF so far that can never become valid."""
    if _BARE_LF.search(data) is not None:
        return ProtocolError("bare LF in the request head")
    nl = data.find(b"\r\n")
    if nl >= 0 and data[nl - 9 : nl - 3] != b" HTTP/":
        return ProtocolError("malformed request line (HTTP/0.9 is not supported)")
    return None


def end_request(self: Ending, status: int, now: float, term: str = "") -> None:
    """The one place a request ends (pyvs.logs.access): counters by listener and
    server, then the access-log line and the page view when configured. The
    ``_ended`` method of H1Connection and of an HTTP/2 stream (pyvs.h2.stream)."""
    ex = self.ex
    if ex.head is None:
        # A head that could not be parsed (400, 431) or never came (408): nothing the
        # exchange holds from an earlier request on this connection is this one's.
        ex.last_server = None
        ex.rid = b""
        ex.view.client_ip = ex.client_ip
    t = self.traffic.get(ex.last_server)  # WorkerStats.observe, inline: latency by class, bytes
    if t is None:
        t = self.traffic[ex.last_server] = [0.0] * PAIR_LEN
    if ex.head is not None:
        dur = now - ex.started
        if ex.attempts > 1:
            t[PAIR_RETRIES] += ex.attempts - 1
    else:
        dur = 0.0
    observe(t, status, dur, ex.resp_bytes)  # latency bucket of its class, sum, bytes (one C call)
    obs = self.obs
    if obs is not None:
        obs.ended(ex, status, now, dur, term)


def half_close(t: asyncio.Transport) -> bool:
    """The start of a lingering close (H1Connection._close_lingering, an HTTP/2
    connection's GOAWAY for an error): a FIN now, so that what the client still sends
    is read and dropped instead of making the kernel reset the answer away; the
    caller closes after ``LINGER_TIME``. False where the transport cannot half-close
    (TLS, test fakes): the caller closes at once."""
    can_write_eof = getattr(t, "can_write_eof", None)  # not every transport has one (fakes)
    if can_write_eof is None or not can_write_eof():
        return False
    t.write_eof()
    return True


def leave_client(lst: ListenerRuntime, key: str) -> None:
    """Give back a client connection's place in max_client_connections (an HTTP/1
    connection, or the HTTP/2 connection it became)."""
    cap = lst.client_cap
    if cap is not None:
        cap.leave(key)
        return
    table = lst.clients
    n = table.get(key, 0) - 1
    if n > 0:
        table[key] = n
    else:
        table.pop(key, None)


class H1Connection(asyncio.Protocol):
    """Server side of one HTTP/1 client connection (the exchange's downstream)."""

    # Slots: CPython 3.11 keeps up to 29 attributes of a plain object in its fast
    # layout; this class has 29, and the 30th would have moved every attribute of every
    # request into a dict (+1,449 instructions per request, bench/micro.py). Slots have
    # no such cliff, and each access is a little cheaper. A subclass without slots of
    # its own (TlsConnection, pyvs.h2.detect's) gets a dict for what it adds.
    __slots__ = ("batch", "client_key", "client_write_blocked", "close_after", "closed", "conn_cap", "deadline",
                 "ended_head", "ex", "idle_wait", "inbuf", "loop", "lst", "max_body", "max_headers", "obs",
                 "phase", "reading_paused", "req_ended", "req_framer", "resp_by_close", "resp_encoded",
                 "resp_until_close", "traffic", "transport", "tunnel_eofs", "up_write_blocked", "wbuf", "worker")

    # The TLS facts of a TLS connection (pyvs.tls.conn.TlsConnection sets it); a class
    # attribute, so a plain connection carries nothing for it.
    tls: TlsFacts | None = None

    def __init__(self, listener: ListenerRuntime) -> None:
        self.lst = listener
        self.worker = listener.worker
        self.loop = listener.worker.loop
        # The short paths write through the worker's batch; every other write or close
        # on a connection of this exchange calls batch.flush() first (ordering).
        self.batch = listener.worker.batch
        self.transport: asyncio.Transport | None = None
        self.deadline = 0.0
        self.idle_wait = False
        self.phase = HEAD
        self.inbuf = b""
        self.req_framer: LengthBody | ChunkedBody | None = None
        self.req_ended = False
        self.reading_paused = False
        self.up_write_blocked = False
        self.client_write_blocked = False
        self.resp_until_close = False
        self.resp_encoded = False
        # The response under way ends with the close for this client (set once: such a
        # response is the connection's last): a cut must reset, not close.
        self.resp_by_close = False
        self.close_after = False
        self.tunnel_eofs = 0
        self.closed = False
        # Response bytes gathered while one read from the server is handled, written
        # with one writelines(): head, body and terminator usually cost one syscall.
        self.wbuf: list[bytes] = []
        self.ex = Exchange(listener, self)
        cfg = listener.cfg
        self.max_body = cfg.max_body
        self.max_headers = cfg.max_headers
        self.conn_cap = cfg.max_client_connections
        self.client_key: str | None = None  # counted in ListenerRuntime.clients under this address
        # The end of each request (_ended): latency and status counters of the listener,
        # the access log and page views when the listener has them (else None).
        self.traffic = self.worker.stats.traffic(listener.name)
        self.obs = self.worker.observers.get(listener.name)
        self.ended_head: RequestHead | None = None  # the request abort() ended (no second line)

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        ip = peer[0] if peer else ""
        self.ex.set_client(ip, local[0] if local else "")
        if self.conn_cap and not self.lst.accept_proxy and not self._admit(ip):
            return
        w = self.worker
        w.stats.client_connections += 1
        w.connections.add(self)
        w.sweeper.add(self)
        self.deadline = self.loop.time() + self.lst.request_timeout
        if w.draining:
            self.close_after = True
        if self.lst.accept_proxy:
            self.phase = PROXY

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == HEAD:
            self._heads(data)
        elif phase == BODY:
            self._request_body(data, 0)
        elif phase == TUNNEL:
            up = self.ex.up
            if up is not None and up.transport is not None:
                up.transport.write(data)
        elif phase == PROXY:
            self._proxy_header(data)
        elif phase == LINGER:
            pass  # the rest of a request already answered (413...): read only to be discarded
        else:  # WAIT: a pipelined request (or tunnel bytes before the 101)
            self.inbuf += data
            self.pause_reading()

    def eof_received(self) -> bool | None:
        if self.phase == LINGER:
            return None  # the client has sent everything: close now
        self.batch.flush()  # a response still in the batch must leave before a close
        up = self.ex.up
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
        if self.client_key is not None:
            self._leave()
        w = self.worker
        w.connections.discard(self)
        w.sweeper.discard(self)
        ex = self.ex
        ex.cancel_connect()
        ex.drop_upstream()
        if ex.head is not None and ex.head is not self.ended_head:
            # a tunnel (101) ends here normally; anything else was cut off by the client
            self._ended(ex.resp_status if ex.resp_started else 499, self.loop.time(),
                        "" if self.phase == TUNNEL else "client_closed")
        ex.finished()
        ex.view.head = None
        ex.detach()  # the connection and its exchange refer to each other: break the cycle

    def pause_writing(self) -> None:
        self.client_write_blocked = True
        up = self.ex.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()
            up.deadline = 0.0
        self.deadline = self.loop.time() + self.lst.client_timeout
        self.pause_reading()

    def resume_writing(self) -> None:
        self.client_write_blocked = False
        up = self.ex.up
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
            if self.phase != TUNNEL:  # a tunnel has no server timeout
                rt = self.ex.route
                up.deadline = self.loop.time() + (rt.server_timeout if rt is not None else 60.0)
            self.deadline = 0.0
        self.maybe_resume()

    def _proxy_header(self, data: bytes) -> None:
        """accept_proxy: the connection starts with a PROXY v1/v2 header naming the client."""
        from pyvs.l4.proxyproto import ProxyProtocolError, parse

        buf = self.inbuf + data
        try:
            hdr = parse(buf)
        except ProxyProtocolError:
            self.worker.stats.bad_requests += 1
            self.abort()  # not a PROXY header: nothing on this connection can be trusted
            return
        if hdr is None:
            self.inbuf = buf
            return
        if hdr.src is not None:
            local = hdr.dst[0] if hdr.dst is not None else self.ex.view.local_ip.decode()
            self.ex.set_client(hdr.src[0], local)
        if self.conn_cap and not self._admit(self.ex.client_ip.decode()):
            return
        self.inbuf = b""
        self.phase = HEAD
        rest = buf[hdr.consumed :]
        if rest:
            self._heads(rest)

    # ------------------------------------------------------------ timeouts
    def on_deadline(self, now: float) -> None:
        if self.phase == LINGER:
            self.phase = HEAD
            self._close()
            return
        if self.ex.head is None:
            if self.idle_wait:
                self._close()  # keep-alive idle time is over: nothing to say
            else:
                self.send_error(408, close=True)  # the request head did not arrive in time
            return
        # The client stopped sending its body or stopped reading our response.
        self.worker.stats.client_timeouts += 1
        if not self.ex.resp_started and not self.req_ended:
            self.send_error(408, close=True)
        else:
            self.abort()

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
            err = _incomplete_head_error(data)
            if err is not None:
                self._protocol_error(err)
                return
            self.inbuf = data
            if was_idle or not self.deadline:  # a partial head is bounded by the request timeout
                self.deadline = self.loop.time() + self.lst.request_timeout
            return
        end += 4
        try:
            head = parse_request_head(data if end == len(data) else data[:end])
            if head.fields > self.max_headers:  # counted by the parser, whichever path
                raise ProtocolError("too many header fields", 431)
            if head.target[0] != 47 and head.method != b"CONNECT":  # absolute-form (or "*")
                to_origin_form(head)  # CONNECT's authority-form gets its 405 from the exchange
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        tls = self.tls
        if tls is not None and tls.misdirected(head.host):  # SNI/Host rule (pyvs/tls/conn.py)
            self._protocol_error(ProtocolError("Host is not covered by the certificate of this connection", 421), head)
            return
        self.deadline = 0.0
        if head.framing == NO_BODY:
            self.phase = WAIT
            self.req_ended = True
            if end < len(data):
                self.inbuf = data[end:]
                self.pause_reading()
            self.ex.start(head, head.keep_alive and bool(head.host) and head.version == b"1.1"
                          and not head.upgrade and head.method in IDEMPOTENT)
            return
        max_body = self.max_body
        if head.framing != CHUNKED:
            if max_body and head.length > max_body:
                self._protocol_error(ProtocolError("request body too large", 413), head)
                return
            self.req_framer = LengthBody(head.length)
        else:
            self.req_framer = ChunkedBody(limit=max_body)
        self.phase = BODY
        self.req_ended = False
        ex = self.ex
        ex.body_follows = end < len(data)
        ex.start(head, False)
        ex.body_follows = False
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
            self.ex.request_body(data if pos == 0 and end == len(data) else data[pos:end])
        if done:
            self.phase = WAIT
            self.req_framer = None
            self.req_ended = True
            self.deadline = 0.0
            if end < len(data):
                self.inbuf = data[end:]
                self.pause_reading()
            self.ex.request_ended()
        else:
            self.deadline = self.loop.time() + self.lst.client_timeout

    # ----------------------------------------------------------- responses
    def in_tunnel(self) -> bool:
        return self.phase == TUNNEL

    def response_until_close(self) -> bool:
        return self.resp_until_close

    def on_interim(self, rh: ResponseHead) -> None:
        req = self.ex.head
        if req is not None and req.version == b"1.1" and not self.closed:
            self.wbuf.append(rh.block + b"\r\n")
            self.flush_client()

    def present(self, ex: Exchange, rh: ResponseHead) -> int:
        """Frame the response head for this client; returns how the upstream
        connection must hand over the body (pyvs.upstream.connection RAW ... ENCODE)."""
        req = ex.head
        assert req is not None
        status = rh.status
        client11 = req.version == b"1.1"
        close = self.close_after or not req.keep_alive or not self.req_ended or self.worker.draining
        framing = rh.framing
        self.resp_until_close = framing == UNTIL_CLOSE
        if status == 101:
            if not req.upgrade or rh.upgrade is None:
                self.abort()
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
        te = b"Transfer-Encoding: chunked\r\n"
        if rh.codings is not None and framing != NO_BODY:
            # Codings besides chunked (gzip, chunked): an HTTP/1.1 client gets them
            # as they are; an HTTP/1.0 client cannot be sent Transfer-Encoding at all
            # (RFC 9112 6.1), and pyvs does not decode gzip: 502, as nginx answers.
            if not client11:
                ex.resp_started = False  # nothing was sent: the exchange answers 502
                raise ProtocolError("a transfer coding an HTTP/1.0 client cannot take", 502)
            te = b"Transfer-Encoding: " + rh.codings + b", chunked\r\n"
        if framing == CHUNKED and req.method != b"HEAD":
            if client11:
                extra = te
            else:
                mode = DECODE
                close = True
                self.resp_by_close = True
        elif framing == UNTIL_CLOSE:
            if client11:
                mode = ENCODE  # keep the client connection: chunk what the server streams
                extra = te
            else:
                close = True
                self.resp_by_close = True
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

    def tunnel_ended(self) -> None:
        self._close()

    def response_ended(self) -> None:
        """The whole response body has been handed over: terminate the framing."""
        if self.resp_encoded:
            self.resp_encoded = False
            self.wbuf.append(b"0\r\n\r\n")
        self.flush_client()

    def whole_response_done(self, now: float) -> None:
        """exchange_done after the short path's whole response (2xx, connection kept,
        nothing pipelined: the exchange checked)."""
        stats = self.worker.stats
        stats.requests += 1
        stats.responses_2xx += 1
        self._ended(self.ex.resp_status, now)
        self.phase = HEAD
        self.idle_wait = True
        self.deadline = now + self.lst.client_timeout

    def exchange_done(self, status: int, now: float) -> None:
        stats = self.worker.stats
        stats.requests += 1
        if 200 <= status < 300:
            stats.responses_2xx += 1
        else:
            stats.count_status(status)
        self._ended(status, now)
        self.ex.finished()
        if self.close_after or self.closed:
            self._close()
            return
        if self.phase == BODY:
            # Answered before the whole body arrived (an error): the rest cannot be read safely.
            self._close_lingering()
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
            self.maybe_resume()

    def _next_pipelined(self) -> None:
        if self.phase == HEAD and self.ex.head is None and self.inbuf and not self.closed:
            data = self.inbuf
            self.inbuf = b""
            self._heads(data)

    # ------------------------------------------------------------- tunnel
    def _start_tunnel(self) -> None:
        up = self.ex.up
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
        self.maybe_resume()

    # ------------------------------------------------------------ helpers
    def send_error(self, status: int, *, close: bool, data: bytes | None = None) -> None:
        """Answer the current request ourselves (errors, sorry pages, filter replies)."""
        self.batch.flush()
        t = self.transport
        if t is None or self.closed:
            return
        ex = self.ex
        if ex.resp_started:
            self.abort()
            return
        req = ex.head
        if (req is not None and (req.version != b"1.1" or not req.keep_alive)) or self.close_after:
            close = True
        self.close_after = close or self.close_after
        ex.resp_status = status
        data = data if data is not None else error_response(status, close)
        ex.resp_head = None
        ex.resp_bytes = len(data)
        t.write(data)
        ex.drop_upstream()
        self.exchange_done(status, self.loop.time())

    def _protocol_error(self, exc: ProtocolError, head: RequestHead | None = None) -> None:
        self.worker.stats.bad_requests += 1
        ex = self.ex
        if ex.resp_started:
            # Garbage while a response is being sent: it cannot be answered any more.
            self.abort()
            return
        ex.drop_upstream()  # e.g. a bad chunk in a body already being forwarded
        ex.cancel_connect()
        data = error_response(exc.status, True)
        ex.resp_status, ex.resp_head, ex.resp_bytes = exc.status, None, len(data)
        if head is not None:  # refused before the exchange started (413, 421): logged with its request line
            ex.head, ex.route, ex.backend, ex.last_server, ex.attempts = head, None, None, None, 0
            ex.rid = b""
            ex.view.client_ip = ex.client_ip  # not a trusted proxy's client of an earlier request
            ex.started = self.loop.time()
        self._ended(exc.status, self.loop.time(), "bad_request")
        ex.finished()
        t = self.transport
        if t is not None and not self.closed:
            self.batch.flush()
            t.write(data)
        self.worker.stats.count_status(exc.status)
        self._close_lingering()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def maybe_resume(self) -> None:
        if not self.reading_paused or self.closed:
            return
        if self.up_write_blocked or self.client_write_blocked or self.ex.req_buf is not None:
            return
        if self.inbuf and self.phase != HEAD:
            return
        self.reading_paused = False
        assert self.transport is not None
        self.transport.resume_reading()

    def drain(self) -> None:
        """Graceful stop: finish the current exchange, then close."""
        self.close_after = True
        if self.ex.head is None and self.ex.up is None:
            self._close()

    def _close(self) -> None:
        self.batch.flush()
        self.flush_client()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _close_lingering(self) -> None:
        """Close after an error answer while the client may still be sending (a 413 to
        a large upload, a 400 in the middle of a body): send the answer and a FIN, then
        read and discard what still comes for up to ``LINGER_TIME``. Closing at once
        with unread data would make the kernel reset the connection, and a client still
        writing would never read the answer (nginx's lingering close). Over TLS, which
        has no half-close, it closes at once."""
        self.batch.flush()
        self.flush_client()
        t = self.transport
        if self.closed or t is None:
            return
        if not half_close(t):
            self._close()
            return
        self.phase = LINGER
        self.close_after = True
        self.deadline = self.loop.time() + LINGER_TIME
        if self.reading_paused:
            self.reading_paused = False
            t.resume_reading()

    def abort(self) -> None:
        """Close at once: whatever the client got is visibly incomplete. When the
        client's response ends with the close (it would take a FIN for the end of the
        body), the connection is reset instead."""
        ex = self.ex
        ex.drop_upstream()
        if ex.head is not None and ex.head is not self.ended_head and not self.closed:
            self.ended_head = ex.head  # connection_lost follows: no second line for it
            self._ended(ex.resp_status if ex.resp_started else 0, self.loop.time(), "aborted")
        self.wbuf.clear()
        t = self.transport
        if t is not None and not self.closed:
            self.closed = True
            if self.resp_by_close:
                sock = t.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    except OSError:
                        pass  # already gone: nothing left to reset
            t.abort()

    _ended = end_request

    def _admit(self, ip: str) -> bool:
        """max_client_connections: count this connection under ``ip``, or close it."""
        if self.client_key is not None:
            self._leave()  # accept_proxy: the address the PROXY header names replaces the peer's
        cap = self.lst.client_cap
        if cap is not None:  # counted for the instance (pyvs/l7/clientcap.py)
            if not cap.admit(ip):
                self.worker.stats.client_cap_refused += 1
                self.closed = True
                assert self.transport is not None
                self.transport.close()
                return False
            self.client_key = ip
            return True
        table = self.lst.clients
        n = table.get(ip, 0)
        if n >= self.conn_cap:
            self.worker.stats.client_cap_refused += 1
            self.closed = True
            assert self.transport is not None
            self.transport.close()
            return False
        table[ip] = n + 1
        self.client_key = ip
        return True

    def _leave(self) -> None:
        key = self.client_key
        assert key is not None
        self.client_key = None
        leave_client(self.lst, key)

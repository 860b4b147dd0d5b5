"""HTTP/2 to servers (``servers[].proto: h2``): one multiplexed connection per server.

Theory of operation
-------------------
The exchange speaks to its server through an :class:`~pyvs.upstream.connection.UpstreamConn`:
it writes an HTTP/1.1 request (head, then body bytes) to the connection's transport
and is called back with a parsed response head, body bytes in its ``wbuf`` and the
end. For a server that speaks HTTP/2, :class:`H2UpstreamStream` *is* such a connection
-- a subclass with the same attributes -- but it stands for one stream of a shared
:class:`H2ClientConnection`, and its ``transport`` (:class:`StreamTransport`)
translates what the exchange writes:

- the HTTP/1.1 head pyvs built becomes a HEADERS frame (``:authority`` from Host,
  connection-specific fields dropped, ``te: trailers`` added, as gRPC requires);
- body bytes become DATA frames (a chunked body is decoded, its trailers become a
  trailing HEADERS frame) as far as the server's windows allow; more than
  :data:`BUFFER` bytes waiting is reported as ``upstream_write_blocked`` (the client
  stops being read), as a full socket is for HTTP/1.

The other way, the response HEADERS become an HTTP/1.1 head parsed by the usual
parser (a body without Content-Length is declared chunked), so routes, filters and
both kinds of downstream present it as any response; DATA frames reach ``wbuf``
chunk-encoded when the downstream asked for the HTTP/1 framing (``RAW``/``REBUILT``)
and as they are otherwise. Response trailers (gRPC's ``grpc-status``) go to an
HTTP/2 downstream as trailers (``H2Stream.trailers_out``) and to an HTTP/1.1 client
in the chunked trailer section. While the downstream holds its server
(``transport.pause_reading``), the stream's DATA is not acknowledged and the
server's window closes on that stream alone.

:class:`pyvs.h2.pool.H2Pool` keeps one connection per server and worker, opened on first use
(one connect shared by the exchanges that wait for it) and replaced when the server
sends GOAWAY or its stream limit is reached. Connect failures and timeouts reach the
exchange through the usual connect task, so retries work as for HTTP/1.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from pyvs.h2.headers import CONNECTION_FIELDS
from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody
from pyvs.http.h1 import NO_BODY, parse_response_head
from pyvs.upstream.connection import RAW, REBUILT, STAGED, Owner, UpstreamConn

if TYPE_CHECKING:
    from pyvs.h2.pool import H2Pool

log = logging.getLogger("pyvs.h2")

BUFFER = 262144  # request bytes waiting for the server's window before the client is held
STREAM_WINDOW = 1 << 20  # our receive window per stream (response bytes in flight)
CONN_WINDOW = 16 << 20
CANCEL = 8
REFUSED_STREAM = 7
_S = h2.settings.SettingCodes
_NO_CONTENT = frozenset({b"204", b"304"})


class StreamTransport(asyncio.Transport):
    """What the exchange writes to and pauses, for one stream."""

    def __init__(self, st: H2UpstreamStream) -> None:
        super().__init__()
        self.st = st

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.st.feed(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.st.feed(bytes(data))

    def pause_reading(self) -> None:
        self.st.paused = True

    def resume_reading(self) -> None:
        st = self.st
        st.paused = False
        if st.unacked:
            st.conn.ack(st.sid, st.unacked)
            st.unacked = 0
            st.conn.flush()

    def is_reading(self) -> bool:
        return not self.st.paused

    def close(self) -> None:
        self.st.close()

    def abort(self) -> None:
        self.st.close()

    def is_closing(self) -> bool:
        return self.st.closed

    def can_write_eof(self) -> bool:
        return False


class H2UpstreamStream(UpstreamConn):
    """One request on an HTTP/2 server connection, as an UpstreamConn (module docstring)."""

    __slots__ = ("chunked_out", "conn", "encode", "ended", "head_buf", "out", "paused", "pool", "remaining",
                 "req_framer", "req_trailers", "sid", "trailers_in", "unacked", "write_blocked")

    def __init__(self, pool: H2Pool, owner: Owner) -> None:
        super().__init__(pool.server, owner, pool.worker.sweeper)
        self.pool = pool
        self.conn: H2ClientConnection = None  # type: ignore[assignment]  # set by bind
        self.sid = 0
        self.head_buf = b""
        self.req_framer: ChunkedBody | None = None
        self.remaining = 0
        self.out = bytearray()
        self.chunked_out = False  # the request ends once ``out`` is empty (END_STREAM pending)
        self.paused = False
        self.unacked = 0
        self.encode = False  # chunk-encode response bytes for the downstream
        self.ended = False  # the response is complete
        self.trailers_in: list[tuple[bytes, bytes]] | None = None
        self.req_trailers: list[tuple[bytes, bytes]] = []
        self.write_blocked = False

    def bind(self, conn: H2ClientConnection) -> None:
        self.conn = conn
        conn.pending.add(self)
        self.transport = StreamTransport(self)
        self.sweeper.add(self)
        if self.owner is not None:
            self.owner.upstream_ready(self)

    # ------------------------------------------------ request (exchange -> server)
    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.sid:
            buf = self.head_buf + data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.head_buf = buf
                return
            self.head_buf = b""
            self._start(buf[: end + 2])
            data = buf[end + 4 :]
            if not data:  # a request without a body: its HEADERS frame leaves now
                self.conn.flush()
                return
        framer = self.req_framer
        if framer is not None:
            try:
                _, done = framer.feed(data, 0)
            except ProtocolError as exc:
                self._fail(exc)
                return
            for piece in framer.decoded:
                self.out += piece
            framer.decoded.clear()
            if done:
                self.req_framer = None
                self.chunked_out = True
                for line in framer.trailers.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name and name not in CONNECTION_FIELDS:
                        self.req_trailers.append((name, value.strip(b" \t")))
        elif self.remaining > 0:
            self.out += data[: self.remaining]
            self.remaining -= min(len(data), self.remaining)
            if self.remaining == 0:
                self.chunked_out = True
        self.send_out()
        self.conn.flush()

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        method, _, rest = lines[0].partition(b" ")
        target = rest.rpartition(b" ")[0]
        authority = b""
        fields: list[tuple[bytes, bytes]] = []
        chunked = False
        length = -1
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip(b" \t")
            if name == b"host":
                authority = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name in CONNECTION_FIELDS:
                continue
            else:
                if name == b"content-length":
                    length = int(value)
                fields.append((name, value))
        tls = self.pool.tls
        pseudo = [(b":method", method), (b":scheme", b"https" if tls else b"http"),
                  (b":authority", authority or self.server.host_header), (b":path", target)]
        fields = [*pseudo, (b"te", b"trailers"), *fields]
        end = not chunked and length <= 0
        conn = self.conn
        try:
            self.sid = conn.open(self, fields, end)
        except h2.exceptions.H2Error as exc:
            self._fail(exc)
            return
        if chunked:
            self.req_framer = ChunkedBody(decode=True)
        elif length > 0:
            self.remaining = length

    def send_out(self) -> None:
        """DATA as far as the windows allow; END_STREAM (or trailers) after the last."""
        out = self.out
        conn = self.conn
        if out and not conn.write_blocked:
            n = conn.send_data(self.sid, out)
            if n:
                del out[:n]
        if not out and self.chunked_out:
            self.chunked_out = False
            conn.end_stream(self.sid, self.req_trailers)
        owner = self.owner
        if owner is None:
            return
        if len(out) > BUFFER and not self.write_blocked:
            self.write_blocked = True
            owner.upstream_write_blocked(True)
        elif self.write_blocked and len(out) <= BUFFER >> 1:
            self.write_blocked = False
            owner.upstream_write_blocked(False)

    # ----------------------------------------------- response (server -> exchange)
    def on_headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        owner = self.owner
        if owner is None or self.ended:
            return
        status = b"502"
        lines = []
        has_length = False
        for name, value in fields:
            if name == b":status":
                status = value
            elif name[:1] != b":" and name not in CONNECTION_FIELDS:
                if name == b"content-length":
                    has_length = True
                lines.append(name + b": " + value + b"\r\n")
        if status[:1] == b"1":
            if status != b"101":
                owner.on_interim(parse_response_head(b"HTTP/1.1 " + status + b" \r\n" + b"".join(lines) + b"\r\n",
                                                     head_request=False))
            return
        declared_chunked = not has_length and not end and status not in _NO_CONTENT
        if declared_chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        elif end and not has_length and status not in _NO_CONTENT:
            lines.append(b"content-length: 0\r\n")
        block = b"HTTP/1.1 " + status + b" \r\n" + b"".join(lines) + b"\r\n"
        try:
            rh = parse_response_head(block, head_request=self.head_request)
        except ProtocolError as exc:
            self._fail(exc)
            return
        self.response = rh
        self.bytes_in += len(block)
        try:
            mode = self.mode = owner.on_response_head(rh)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if mode == RAW:
            owner.wbuf.append(block)
        self.encode = declared_chunked and rh.framing != NO_BODY and mode in (RAW, REBUILT)
        if rh.framing == NO_BODY:
            self._end_response()
        else:
            owner.flush_client()

    def on_data(self, data: bytes, flow: int) -> None:
        owner = self.owner
        if owner is None or self.ended or self.response is None:
            self.conn.ack(self.sid, flow)
            return
        self.bytes_in += len(data)
        if self.mode >= STAGED:  # a filter transforms the body (compression, the cache's recorder)
            if data:
                self.staged_out(owner, owner.on_body(data, False), False)
        elif data:
            if self.encode:
                owner.wbuf += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                owner.wbuf.append(data)
        if self.paused:
            self.unacked += flow
        else:
            self.conn.ack(self.sid, flow)
        owner.flush_client()
        if self.deadline:
            limits = owner.route
            if limits is not None:
                deadline = self.sweeper.loop.time() + limits.server_timeout
                if limits.total_timeout:
                    deadline = min(deadline, owner.started + limits.total_timeout)
                self.deadline = deadline

    def on_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.trailers_in = [(n, v) for n, v in fields if n[:1] != b":" and n not in CONNECTION_FIELDS]

    def trailer_lines(self) -> bytes:
        """The server's trailers as HTTP/1.1 field lines (see UpstreamConn.trailer_lines)."""
        return b"".join(n + b": " + v + b"\r\n" for n, v in self.trailers_in or ())

    def on_end(self) -> None:
        if self.owner is None or self.ended:
            return
        if self.response is None:  # END_STREAM without a final response
            self._fail(ProtocolError("stream ended without a response", 502))
            return
        self._end_response()

    def _end_response(self) -> None:
        owner = self.owner
        if owner is None or self.ended:
            return
        self.ended = True
        trailers = self.trailers_in
        if self.mode >= STAGED:
            # The stages' last output; the exchange frames the trailers that still hold
            # (trailer_lines, Exchange._staged_trailers), as for an HTTP/1.1 server.
            self.staged_out(owner, owner.on_body(b"", True), True)
        elif self.encode:
            tl = b"".join(n + b": " + v + b"\r\n" for n, v in trailers or ())
            owner.wbuf.append(b"0\r\n" + tl + b"\r\n")
        elif trailers:
            down = getattr(owner, "down", None)
            if down is not None and hasattr(down, "trailers_out"):
                down.trailers_out = trailers  # an HTTP/2 client: real trailers (gRPC status)
        owner.on_response_end(self)

    def on_reset(self, code: int) -> None:
        self.ended = True
        owner = self.owner
        if owner is None:
            self._forget()
            return
        exc = None if code == REFUSED_STREAM and self.bytes_in == 0 else ProtocolError(
            f"server reset the stream (error {code})", 502)
        self.connection_lost(exc)

    def _fail(self, exc: Exception) -> None:
        owner = self.owner
        self.close()
        if owner is not None:
            owner.upstream_lost(self, exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc), 502))

    # ------------------------------------------------------------- the pool
    @property
    def reusable(self) -> bool:
        return False  # a stream is used once; its connection stays for the next streams

    def release(self, now: float) -> bool:
        self.close()
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            self.sweeper.discard(self)
            conn = self.conn
            # Reset unless both sides are over: a server may answer before the whole
            # request body is sent (a 401 to an upload); left half-open, the stream
            # would hold one of the server's concurrent-stream slots for good.
            if conn is not None and self.sid and (not self.ended or self.remaining or self.out or self.chunked_out
                                                   or self.req_framer is not None):
                conn.reset(self.sid, CANCEL)
            self._forget()

    def abort(self) -> None:
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.pending.discard(self)
        if conn is not None and self.sid:
            if self.unacked:
                # DATA held unacknowledged while the client was slow: it goes back to the
                # connection's window, else each abandoned stream would shrink it for good
                # until no response could flow on this connection.
                conn.ack(self.sid, self.unacked)
                self.unacked = 0
                conn.flush()
            conn.streams.pop(self.sid, None)
            if conn.goaway and not conn.streams and not conn.pending and not conn.closed:
                conn._close(None)  # the server said GOAWAY and its last stream is over


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to a server, shared by the streams of many exchanges."""

    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=True,
                                           normalize_inbound_headers=False, validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.h2 = c = h2.connection.H2Connection(config=config)
        c.local_settings = h2.settings.Settings(client=True, initial_values={
            _S.ENABLE_PUSH: 0, _S.INITIAL_WINDOW_SIZE: STREAM_WINDOW, _S.MAX_CONCURRENT_STREAMS: 100})
        self.streams: dict[int, H2UpstreamStream] = {}
        # Streams bound to this connection whose HEADERS have not left yet: they count
        # against the server's stream limit already (full), or waiters woken by the
        # same connect would all take it and the extra ones fail.
        self.pending: set[H2UpstreamStream] = set()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.goaway = False
        self.write_blocked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        c = self.h2
        c.initiate_connection()
        c.increment_flow_control_window(CONN_WINDOW - 65535)
        self.flush()

    def full(self) -> bool:
        return (self.closed or self.goaway
                or len(self.streams) + len(self.pending) >= self.h2.remote_settings.max_concurrent_streams)

    def open(self, st: H2UpstreamStream, fields: list[tuple[bytes, bytes]], end: bool) -> int:
        c = self.h2
        self.pending.discard(st)
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, fields, end_stream=end)
        self.streams[sid] = st
        return sid

    def data_received(self, data: bytes) -> None:
        try:
            events: list[Any] = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 server %s/%s: protocol error: %s", self.pool.server.backend.name,
                        self.pool.server.name, exc)
            self._close(ProtocolError(f"HTTP/2 protocol error: {exc}", 502))
            return
        streams = self.streams
        for ev in events:
            t = type(ev)
            sid = getattr(ev, "stream_id", 0)
            st = streams.get(sid) if sid else None
            if t is h2.events.DataReceived:
                if st is None:
                    self.ack(sid, ev.flow_controlled_length)
                else:
                    st.on_data(ev.data, ev.flow_controlled_length)
            elif t is h2.events.ResponseReceived or t is h2.events.InformationalResponseReceived:
                if st is not None:
                    st.on_headers(ev.headers, ev.stream_ended is not None)
            elif t is h2.events.TrailersReceived:
                if st is not None:
                    st.on_trailers(ev.headers)
            elif t is h2.events.StreamEnded:
                if st is not None:
                    st.on_end()
            elif t is h2.events.StreamReset:
                if st is not None:
                    st.on_reset(ev.error_code)
            elif t is h2.events.WindowUpdated:
                if sid:
                    if st is not None and st.out:
                        st.send_out()
                else:
                    self._send_all()
            elif t is h2.events.RemoteSettingsChanged:
                self._send_all()
            elif t is h2.events.ConnectionTerminated:
                self.goaway = True
                if self.pool.conn is self:
                    self.pool.conn = None
                last = ev.last_stream_id
                for s in list(streams.values()):
                    if s.sid > last:  # never processed: safe to send elsewhere
                        s.on_reset(REFUSED_STREAM)
                if not streams:
                    self._close(None)
                    return
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_data(self, sid: int, out: bytearray) -> int:
        c = self.h2
        try:
            window = c.local_flow_control_window(sid)
        except h2.exceptions.H2Error:
            return len(out)
        n = min(len(out), window)
        size = c.max_outbound_frame_size
        pos = 0
        with memoryview(out) as view:
            while pos < n:
                step = min(size, n - pos)
                c.send_data(sid, bytes(view[pos : pos + step]))
                pos += step
        return n

    def end_stream(self, sid: int, trailers: list[tuple[bytes, bytes]]) -> None:
        try:
            if trailers:
                self.h2.send_headers(sid, trailers, end_stream=True)
            else:
                self.h2.end_stream(sid)
        except h2.exceptions.H2Error:
            pass

    def reset(self, sid: int, code: int) -> None:
        try:
            self.h2.reset_stream(sid, code)
        except h2.exceptions.H2Error:
            pass
        self.flush()
        if self.goaway and not self.streams:
            self._close(None)

    def ack(self, sid: int, n: int) -> None:
        if n:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except h2.exceptions.H2Error:
                pass

    def _send_all(self) -> None:
        for st in list(self.streams.values()):
            if st.out or st.chunked_out:
                st.send_out()

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._send_all()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool.conn is self:
            self.pool.conn = None
        for st in list(self.streams.values()):
            st.connection_lost(exc if exc is not None else ProtocolError("server closed the connection", 502))
        self.streams.clear()

    def _close(self, exc: Exception | None) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        if self.pool.conn is self:
            self.pool.conn = None
        for st in list(self.streams.values()):
            st.connection_lost(exc)
        self.streams.clear()

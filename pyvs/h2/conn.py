"""The HTTP/2 client connection: the ``h2`` state machine and its streams.

Theory of operation
-------------------
An :class:`H2ServerConnection` is the asyncio protocol of one client connection that
speaks HTTP/2 (handed over by :mod:`pyvs.h2.detect` after the h2c preface or ALPN
``h2``). It owns the sans-I/O ``h2.connection.H2Connection``: bytes in, events out;
frames out through ``data_to_send``, written once per batch of events. Each request
stream is an :class:`pyvs.h2.stream.H2Stream` with its own exchange; this class only
routes events to streams and keeps what is connection-wide:

- **flow control out**: a stream sends DATA while both its window and the connection's
  allow; a WINDOW_UPDATE (or a SETTINGS change of the initial window) lets the
  waiting streams send again. While the client socket is full (``pause_writing``)
  no stream sends: their buffers grow to their limit and hold their servers.
- **flow control in**: bytes are acknowledged per stream (``ack``) when the stream
  has passed them on; the connection window is raised once at the start
  (``connection_window_size``) so that one slow upload does not stall the others.
- **limits**: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE (the
  listener's ``max_header_size``) and frame size are enforced by ``h2``; floods are
  counted by :class:`pyvs.h2.guard.FloodGuard` and end in GOAWAY
  ENHANCE_YOUR_CALM. A protocol error ends the connection with GOAWAY
  PROTOCOL_ERROR. Nothing of it touches another connection.
- **graceful stop** (worker drain, reload, idle timeout): GOAWAY NO_ERROR naming the
  last stream taken; streams under way finish, later ones are refused
  (REFUSED_STREAM, which clients retry elsewhere), and the connection closes when
  the last stream is done. The frame is written directly (``h2`` would refuse to
  send anything after its own ``close_connection``).
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
from hyperframe.frame import GoAwayFrame

from pyvs.h2.guard import CONTROL, EMPTY, NAMES, RESETS, FloodGuard
from pyvs.h2.stream import REFUSED_STREAM, H2Stream

if TYPE_CHECKING:
    from pyvs.l7.exchange import Exchange
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.tls.conn import TlsFacts

log = logging.getLogger("pyvs.h2")

# GOAWAY codes (RFC 9113 7)
PROTOCOL_ERROR = 1
ENHANCE_YOUR_CALM = 11

_S = h2.settings.SettingCodes
# Seconds a connection closed for an error keeps reading (and dropping) the client's
# bytes after its GOAWAY and FIN, so that the close does not reset the GOAWAY away.
LINGER = 2.0


class H2ServerConnection(asyncio.Protocol):
    """Server side of one HTTP/2 client connection (see the module docstring)."""

    # worker.drain tells the two kinds of client connection apart by this (an
    # H1Connection has its one exchange here).
    ex = None
    close_after = False
    inbuf = b""

    def __init__(self, lst: ListenerRuntime, template: Exchange, tls: TlsFacts | None,
                 view_type: Any, client_key: str | None) -> None:
        self.lst = lst
        self.worker = w = lst.worker
        self.loop = w.loop
        self.template = template
        self.tls = tls
        self.view_type = view_type  # TlsRequestView on a TLS connection, else None
        self.client_key = client_key  # counted in max_client_connections (handed over)
        cfg = lst.cfg
        limits = cfg.http2_limits
        self.max_body = cfg.max_body
        self.max_headers = cfg.max_headers
        self.buffer_limit = limits.buffer
        self.guard = FloodGuard(limits.window, limits.max_resets, limits.max_control_frames,
                                limits.max_empty_frames)
        self.traffic = w.stats.traffic(lst.name)
        self.obs = w.observers.get(lst.name)
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True,
            normalize_inbound_headers=False, validate_outbound_headers=False, normalize_outbound_headers=False,
        )
        self.h2 = c = h2.connection.H2Connection(config=config)
        c.local_settings = h2.settings.Settings(client=False, initial_values={
            _S.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            _S.MAX_HEADER_LIST_SIZE: lst.max_head,
            _S.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            _S.MAX_FRAME_SIZE: limits.max_frame_size,
        })
        self.conn_window = limits.connection_window_size
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.write_blocked = False
        self.closed = False
        self.goaway_sent = False
        self.last_sid = 0
        self.deadline = 0.0

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        w = self.worker
        w.connections.add(self)
        w.sweeper.add(self)
        c = self.h2
        c.initiate_connection()
        extra = self.conn_window - 65535
        if extra > 0:
            c.increment_flow_control_window(extra)
        self.deadline = self.loop.time() + self.lst.client_timeout
        self.flush()
        if w.draining:
            self.drain()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events: list[Any] = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(exc)
            return
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is h2.events.DataReceived:
                st = streams.get(ev.stream_id)
                if not ev.data and ev.stream_ended is None and self._flood(EMPTY):
                    return
                if st is None:
                    self.ack(ev.stream_id, ev.flow_controlled_length)
                else:
                    st.on_data(ev.data, ev.flow_controlled_length)
            elif t is h2.events.RequestReceived:
                self._request(ev)
            elif t is h2.events.StreamEnded:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.on_end()
            elif t is h2.events.WindowUpdated:
                if ev.stream_id:
                    st = streams.get(ev.stream_id)
                    if st is not None and st.out:
                        st.send_out()
                else:
                    self._send_all()
            elif t is h2.events.StreamReset:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.on_reset()
                if self._flood(RESETS):
                    return
            elif t is h2.events.RemoteSettingsChanged:
                if self._flood(CONTROL):
                    return
                self._send_all()  # the initial window may have grown
            elif t is h2.events.PingReceived or t is h2.events.PriorityUpdated:
                if self._flood(CONTROL):
                    return
            elif t is h2.events.TrailersReceived:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.on_trailers(ev.headers)
            elif t is h2.events.ConnectionTerminated:
                self.flush()
                self._close()
                return
            if self.closed:
                return
        self.flush()

    def _request(self, ev: Any) -> None:
        sid = ev.stream_id
        c = self.h2
        if self.goaway_sent and sid > self.last_sid:
            c.reset_stream(sid, REFUSED_STREAM)  # after GOAWAY: the client retries elsewhere
            return
        st = H2Stream(self, sid)
        self.streams[sid] = st
        self.worker.sweeper.add(st)
        self.deadline = 0.0
        st.start(ev.headers, ev.stream_ended is not None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.worker
        w.connections.discard(self)
        w.sweeper.discard(self)
        if self.client_key is not None:
            self._leave()
        for st in list(self.streams.values()):
            st.on_reset()
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._send_all()
        self.flush()

    def on_deadline(self, now: float) -> None:
        """Idle (no stream) for the listener's client timeout: GOAWAY, then close.
        After a GOAWAY for an error: the end of the lingering close."""
        if self.closed:
            if self.transport is not None:
                self.transport.close()
            return
        if not self.streams:
            self.drain()

    # ------------------------------------------------- used by the streams
    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def send_headers(self, sid: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(sid, fields, end_stream=end)
        except h2.exceptions.H2Error:
            pass  # the stream was reset meanwhile

    def send_data(self, sid: int, out: bytearray, end: bool = False) -> int:
        """Send what the windows allow of ``out``; returns the bytes taken. ``end``:
        when all of it goes, the last DATA frame carries END_STREAM."""
        c = self.h2
        try:
            window = c.local_flow_control_window(sid)
        except h2.exceptions.H2Error:
            return len(out)  # the stream is gone: drop its bytes
        if window <= 0:
            return 0
        size = c.max_outbound_frame_size
        n = min(len(out), window)
        pos = 0
        last = end and n == len(out)
        with memoryview(out) as view:
            while pos < n:
                step = min(size, n - pos)
                c.send_data(sid, bytes(view[pos : pos + step]), end_stream=last and pos + step == n)
                pos += step
        return n

    def end_stream(self, sid: int) -> None:
        try:
            self.h2.end_stream(sid)
        except h2.exceptions.H2Error:
            pass

    def reset(self, sid: int, code: int) -> None:
        try:
            self.h2.reset_stream(sid, code)
        except h2.exceptions.H2Error:
            pass
        self.flush()

    def ack(self, sid: int, n: int) -> None:
        if n:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except h2.exceptions.H2Error:
                pass

    def forget(self, st: H2Stream) -> None:
        """The stream is over on both sides (as far as pyvs is concerned)."""
        self.worker.sweeper.discard(st)
        if self.streams.pop(st.sid, None) is None:
            return
        if not st.req_ended and not self.closed:
            # Answered before the client finished its body: tell it to stop (RFC 9113 8.1).
            self.reset(st.sid, 0)
        if not self.streams:
            if self.goaway_sent:
                self._close()
            else:
                self.deadline = self.loop.time() + self.lst.client_timeout

    def _send_all(self) -> None:
        for st in list(self.streams.values()):
            if st.out and not st.out_ended:
                st.send_out()

    # ------------------------------------------------------------ ending
    def drain(self) -> None:
        """Graceful stop: GOAWAY NO_ERROR now, close when the last stream is done."""
        if self.closed:
            return
        if not self.goaway_sent:
            self.goaway_sent = True
            self.last_sid = self.h2.highest_inbound_stream_id
            self.flush()
            if self.transport is not None:
                self.transport.write(GoAwayFrame(stream_id=0, last_stream_id=self.last_sid, error_code=0).serialize())
        if not self.streams:
            self._close()

    def abort(self) -> None:
        """Close at once (the end of a worker's drain time)."""
        self._goaway(0, b"")

    def _flood(self, kind: int) -> bool:
        if not self.guard.hit(kind, self.loop.time()):
            return False
        log.warning("HTTP/2 client %s on %s: too many %s frames, closing (ENHANCE_YOUR_CALM)",
                    self.template.client_ip.decode(), self.lst.name, NAMES[kind])
        self._goaway(ENHANCE_YOUR_CALM, b"too many " + NAMES[kind].encode())
        return True

    def _fail(self, exc: Exception) -> None:
        self.worker.stats.bad_requests += 1
        log.info("HTTP/2 client %s on %s: protocol error: %s", self.template.client_ip.decode(), self.lst.name, exc)
        self._goaway(PROTOCOL_ERROR, b"")

    def _goaway(self, code: int, debug: bytes) -> None:
        if self.closed:
            return
        try:
            self.h2.close_connection(error_code=code, additional_data=debug)
        except h2.exceptions.H2Error:
            pass
        self.flush()
        for st in list(self.streams.values()):
            st.on_reset()  # the exchanges end; their server connections are dropped
        t = self.transport
        if t is None or self.closed:
            return
        self.closed = True
        if t.can_write_eof():
            # Closing with the client's flood still unread would send a reset, which can
            # destroy the GOAWAY before the client reads it: send FIN, read and drop
            # what still comes (data_received ignores it), close after LINGER.
            t.write_eof()
            self.deadline = self.loop.time() + LINGER
        else:
            t.close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _leave(self) -> None:
        """Give back this connection's place in max_client_connections."""
        key = self.client_key
        assert key is not None
        self.client_key = None
        cap = self.lst.client_cap
        if cap is not None:
            cap.leave(key)
            return
        table = self.lst.clients
        n = table.get(key, 0) - 1
        if n > 0:
            table[key] = n
        else:
            table.pop(key, None)

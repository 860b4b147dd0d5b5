"""The HTTP/2 client connection: its codec, its streams, floods and GOAWAY.

Theory of operation
-------------------
An :class:`H2ServerConnection` is the asyncio protocol of one client connection that
speaks HTTP/2 (handed over by :mod:`pyvs.h2.detect` after the h2c preface or ALPN
``h2``). It is an :class:`pyvs.h2.codec.H2Codec` (sans-I/O framing: bytes in, calls on the
hooks below out; frames queued and written once per event-loop iteration, so the
responses of many streams finished in one iteration leave in one write). Each request
stream is an :class:`pyvs.h2.stream.H2Stream` with its own exchange; this class only
routes events to streams and keeps what is connection-wide:

- **flow control out**: a stream sends DATA while both its window and the connection's
  allow; a WINDOW_UPDATE (or a SETTINGS change of the initial window) lets the
  waiting streams send again. While the client socket is full (``pause_writing``)
  no stream sends: their buffers grow to their limit and hold their servers.
- **flow control in**: bytes are acknowledged per stream (``ack``) when the stream
  has passed them on; the connection window is raised once at the start
  (``connection_window_size``) so that one slow upload does not stall the others.
- **limits**: SETTINGS_MAX_CONCURRENT_STREAMS (a stream over it is refused with
  RST_STREAM REFUSED_STREAM), SETTINGS_MAX_HEADER_LIST_SIZE (the listener's
  ``max_header_size``: 431) and frame size are enforced by the codec; floods are
  counted by :class:`pyvs.h2.guard.FloodGuard` and end in GOAWAY
  ENHANCE_YOUR_CALM. A protocol error ends the connection with GOAWAY
  PROTOCOL_ERROR. Nothing of it touches another connection.
- **graceful stop** (worker drain, reload, idle timeout): GOAWAY NO_ERROR naming the
  last stream taken; streams under way finish, later ones are refused
  (REFUSED_STREAM, which clients retry elsewhere), and the connection closes when
  the last stream is done.
"""


from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pyvs.h2.codec import ENHANCE_YOUR_CALM, PROTOCOL_ERROR, REFUSED_STREAM, H2Codec, H2Failure
from pyvs.h2.guard import CONTROL, EMPTY, NAMES, RESETS, FloodGuard
from pyvs.h2.headerblock import Fields
from pyvs.h2.stream import H2Stream
from pyvs.l7.h1conn import LINGER_TIME, half_close, leave_client

if TYPE_CHECKING:
    from pyvs.l7.exchange import Exchange
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.tls.conn import TlsFacts

log = logging.getLogger("pyvs.h2")

# Finished streams kept per connection for reuse: up to the concurrent streams it
# allows (a client that keeps 100 streams in flight reuses them all), at most this.
SPARES = 128


class H2ServerConnection(asyncio.Protocol, H2Codec):
    """Server side of one HTTP/2 client connection (see the module docstring)."""

    # (slots: its ~50 attributes would otherwise live in a dict; see pyvs.h2.stream.H2Stream)
    __slots__ = ("buffer_limit", "client_key", "deadline", "early_refused", "flush_pending", "goaway_sent", "guard",
                 "last_sid", "loop", "lst", "max_body", "max_headers", "max_spares", "obs", "peer_goaway",
                 "req_cache", "spares", "template", "tls", "traffic", "transport", "view_type", "worker",
                 "write_blocked")
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
        self.early_refused = 0  # streams refused over the limit before the client knew it
        self.traffic = w.stats.traffic(lst.name)
        self.obs = w.observers.get(lst.name)
        self.codec_init(limits.max_concurrent_streams, limits.initial_window_size, limits.connection_window_size,
                        limits.max_frame_size, lst.max_head)
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.write_blocked = False
        self.closed = False
        self.goaway_sent = False
        self.peer_goaway = False  # the client said GOAWAY: close once its streams are done
        self.last_sid = 0
        self.deadline = 0.0
        self.flush_pending = False
        # Request text by decoded field list (pyvs.h2.stream.H2Stream.start), and
        # finished streams kept for reuse (with their exchanges).
        self.req_cache: dict[int, tuple[Fields, bool, bytes, bool]] = {}
        self.spares: list[H2Stream] = []
        self.max_spares = min(SPARES, limits.max_concurrent_streams)

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        w = self.worker
        w.connections.add(self)
        w.sweeper.add(self)
        w.stats.h2_connections += 1
        self.start()
        self.deadline = self.loop.time() + self.lst.client_timeout
        self.flush()
        if w.draining:
            self.drain()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.receive(data)
        self.flush()

    def new_stream(self, sid: int, fields: Fields, end: bool, list_size: int) -> None:
        if self.goaway_sent or self.peer_goaway:
            self.reset_stream(sid, REFUSED_STREAM)  # after GOAWAY: the client retries elsewhere
            self.on_refused()
            return
        w = self.worker
        w.stats.h2_streams += 1
        spares = self.spares
        if spares:
            st = spares.pop()
            st.reinit(sid, end)
        else:
            st = H2Stream(self, sid, end)
        self.streams[sid] = st  # (it joins the sweeper when it first gets a deadline: H2Stream.deadline)
        self.deadline = 0.0
        st.start(fields, end, list_size > self.max_list)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.worker
        w.connections.discard(self)
        w.sweeper.discard(self)
        w.stats.h2_connections_closed += 1
        key = self.client_key
        if key is not None:
            self.client_key = None
            leave_client(self.lst, key)
        for st in list(self.streams.values()):
            st.lclosed = st.rdone = True
            st.on_reset()
        self.streams.clear()

    def pause_writing(self) -> None:
        """The client does not read: stop reading its frames too, or the answers they
        ask for (HEADERS, RST_STREAM, PING and SETTINGS acks) would pile up here
        without bound (CVE-2019-9517)."""
        self.write_blocked = True
        t = self.transport
        if t is not None and not self.closed:
            t.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        t = self.transport
        if t is not None and not self.closed:
            t.resume_reading()
        self._send_all()
        self.flush()

    def on_deadline(self, now: float) -> None:
        """Idle (no stream) for the listener's client timeout: GOAWAY, then close.
        After a GOAWAY for an error: the end of the lingering close."""
        if self.closed:
            t = self.transport
            if t is not None:  # (bytes still unsent: a client that does not read is not kept)
                t.abort() if t.get_write_buffer_size() else t.close()
            return
        if not self.streams:
            self.drain()

    # --------------------------------------------------------- codec hooks
    def on_control(self) -> bool:
        return self._flood(CONTROL)

    def on_empty(self) -> bool:
        return self._flood(EMPTY)

    def on_reset_stream(self, st: H2Stream | None) -> bool:
        self.worker.stats.h2_resets_received += 1
        if st is not None:
            st.on_reset()
        return self._flood(RESETS)

    def on_refused(self) -> None:
        self.worker.stats.h2_streams_refused += 1
        # Counted with the resets (each costs a decode and an RST_STREAM) once the client
        # knows our limit: before it acknowledged our SETTINGS, or after our GOAWAY, a
        # burst over the limit is allowed (RFC 9113 5.1.2, 6.5.3), within bounds.
        if self.settings_acked and not self.goaway_sent:
            self._flood(RESETS)
        else:
            self.early_refused += 1
            if self.early_refused > 4 * self.max_streams:
                self._flood_close(RESETS)

    def on_stream_error(self) -> None:
        self._flood(RESETS)

    def on_ignored_block(self) -> bool:
        return self._flood(CONTROL)

    def on_goaway(self, code: int) -> None:
        self.peer_goaway = True
        if not self.streams:
            self.write_now()
            self._close()

    def on_send_window(self, st: H2Stream | None) -> None:
        if st is None:
            self._send_all()
        elif st.out and not st.out_ended:
            st.send_out()

    def on_failure(self, failure: H2Failure) -> None:
        if failure.code == ENHANCE_YOUR_CALM:
            log.warning("HTTP/2 client %s on %s: %s, closing (ENHANCE_YOUR_CALM)",
                        self.template.client_ip.decode(), self.lst.name, failure)
            self.worker.stats.h2_flood_continuation += 1
            self._goaway(ENHANCE_YOUR_CALM, str(failure).encode())
            return
        self.worker.stats.bad_requests += 1
        log.info("HTTP/2 client %s on %s: protocol error: %s", self.template.client_ip.decode(), self.lst.name,
                 failure)
        self._goaway(failure.code, b"")

    # ------------------------------------------------- used by the streams
    def flush(self) -> None:
        """Write what is queued at the end of this event-loop iteration (one write for
        every stream that answered in it)."""
        if self.wq and not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.write_now)

    def write_now(self) -> None:
        self.flush_pending = False
        wq = self.wq
        if wq:
            data = b"".join(wq)
            wq.clear()
            t = self.transport
            if not self.closed and t is not None:
                t.write(data)

    def reset(self, st: H2Stream, code: int) -> None:
        """RST_STREAM from us: nothing more goes either way on ``st``. One for the
        client's fault (a malformed request) counts as a reset, checked after this
        turn (the stream is in the middle of ending)."""
        st.lclosed = st.rdone = True
        self.reset_stream(st.sid, code)
        self.flush()
        if code == PROTOCOL_ERROR and self.guard.hit(RESETS, self.loop.time()):
            self.loop.call_soon(self._flood_close, RESETS)

    def forget(self, st: H2Stream) -> None:
        """The stream is over on both sides (as far as pyvs is concerned)."""
        if st.swept:
            st.swept = False
            self.worker.sweeper.discard(st)
        if self.streams.pop(st.sid, None) is None:
            return
        if st.unacked:  # body bytes held while reading was paused: the connection window gets them back
            self._give_back(st.unacked)
            st.unacked = 0
        ex = st.ex
        if ex.up is None and ex.connecting is None and ex.queued is None and len(self.spares) < self.max_spares:
            self.spares.append(st)  # nothing refers to it any more: the next stream may use it
        if not st.rdone and not self.closed:
            # Answered before the client finished its body: tell it to stop (RFC 9113 8.1).
            self.reset(st, 0)
        if not self.streams:
            if self.goaway_sent or self.peer_goaway:
                self.write_now()
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
            self.last_sid = self.highest
            self.goaway_frame(self.last_sid, 0)
            self.worker.stats.h2_goaways += 1
            self.write_now()
        if not self.streams:
            self._close()

    def abort(self) -> None:
        """Close at once (the end of a worker's drain time)."""
        self._goaway(0, b"")

    def _flood(self, kind: int) -> bool:
        if not self.guard.hit(kind, self.loop.time()):
            return False
        self._flood_close(kind)
        return True

    def _flood_close(self, kind: int) -> None:
        """Over a flood limit: GOAWAY ENHANCE_YOUR_CALM, the connection ends."""
        if self.closed:
            return
        log.warning("HTTP/2 client %s on %s: too many %s frames, closing (ENHANCE_YOUR_CALM)",
                    self.template.client_ip.decode(), self.lst.name, NAMES[kind])
        stats = self.worker.stats
        if kind == RESETS:
            stats.h2_flood_resets += 1
        elif kind == CONTROL:
            stats.h2_flood_control += 1
        else:
            stats.h2_flood_empty += 1
        self._goaway(ENHANCE_YOUR_CALM, b"too many " + NAMES[kind].encode())

    def _goaway(self, code: int, debug: bytes) -> None:
        if self.closed:
            return
        if not self.goaway_sent or code:  # (a drain's GOAWAY already told the client)
            self.goaway_frame(self.highest, code, debug)
            self.worker.stats.h2_goaways += 1
        self.write_now()
        for st in list(self.streams.values()):
            st.lclosed = st.rdone = True
            st.on_reset()  # the exchanges end; their server connections are dropped
        t = self.transport
        if t is None or self.closed:
            return
        self.closed = True
        # Closing with the client's flood still unread would send a reset, which can
        # destroy the GOAWAY before the client reads it: send FIN, read and drop what
        # still comes (data_received ignores it), close after LINGER_TIME.
        if half_close(t):
            self.deadline = self.loop.time() + LINGER_TIME
        else:
            t.close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.write_now()
            self.closed = True
            t = self.transport
            t.close()
            if t.get_write_buffer_size():  # it waits for the client to read: for a client timeout at most
                self.deadline = self.loop.time() + self.lst.client_timeout

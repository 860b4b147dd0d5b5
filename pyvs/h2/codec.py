"""The server side of HTTP/2 framing (RFC 9113), lean and sans-I/O.

Theory of operation
-------------------
:class:`H2Codec` turns the bytes of one client connection into calls on its
subclass (:class:`pyvs.h2.conn.H2ServerConnection`) and queues the frames that
subclass asks for in ``wq``; it never reads the clock and never touches a socket.
It replaced the ``h2`` library on this side because the library's generality (an
event object per frame, a state machine driven through enum-keyed tables, header
validation and normalisation in several passes, HPACK encoding of every head)
cost ~85 us of CPU per proxied request, ten times a whole HTTP/1.1 request. Here
a frame is a ``struct`` unpack and a branch; a stream's protocol state is four
plain attributes of the stream object itself (:class:`CodecStream`); header blocks
go through :mod:`pyvs.h2.headerblock`, which remembers repeated blocks.

What the codec enforces (each violation named by its RFC 9113 section):

- the client preface, then SETTINGS as the first frame (3.4); frame sizes against
  our SETTINGS_MAX_FRAME_SIZE (4.2); fixed-size frames of the right size (6.x);
- stream ids: odd, increasing, never 0 where a stream is meant (5.1.1); a frame
  for an idle stream is a connection error; frames for closed streams are ignored
  (5.1: "MUST ignore frames ... after it has sent a RST_STREAM"), and DATA on them
  still gives its bytes back to the connection window;
- header blocks: HEADERS then only its CONTINUATIONs (6.10), at most
  ``MAX_CONTINUATIONS`` of them and ``block_limit`` bytes (CONTINUATION floods end in
  GOAWAY ENHANCE_YOUR_CALM); every block is decoded even for a refused stream, to
  keep HPACK in step; trailers must end the stream (8.1);
- SETTINGS_MAX_CONCURRENT_STREAMS: a stream over it is refused with
  RST_STREAM(REFUSED_STREAM), the connection goes on (5.1.2);
- flow control both ways (5.2, 6.9): DATA beyond the windows we gave is a
  FLOW_CONTROL_ERROR; bytes consumed are given back by WINDOW_UPDATE once half a
  window has been used (one frame per half window instead of one per DATA frame);
  DATA we send never exceeds the client's windows nor its SETTINGS_MAX_FRAME_SIZE;
  a change of SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window (6.9.2).

A connection error raises :class:`H2Failure` inside :meth:`receive`, which calls
``on_failure``; the subclass sends GOAWAY and closes. Floods are counted by the
subclass in the hooks (``on_control``, ``on_empty``, ``on_reset_stream``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyvs.h2.headerblock import Decoder, Fields, HpackError, encode, encode_head

if TYPE_CHECKING:
    from pyvs.h2.stream import H2Stream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 7)
NO_ERROR = 0
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
FLOW_CONTROL_ERROR = 3
STREAM_CLOSED = 5
FRAME_SIZE_ERROR = 6
REFUSED_STREAM = 7
COMPRESSION_ERROR = 9
ENHANCE_YOUR_CALM = 11
# SETTINGS identifiers
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, \
    S_MAX_HEADER_LIST_SIZE = range(1, 7)

_PLAIN_HEADERS = END_HEADERS | PADDED | PRIORITY_FLAG
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
MAX_CONTINUATIONS = 64  # CONTINUATION frames per header block (as the h2 library allowed)

# 24-bit length (as 16 + 8 bits), type, flags, stream id
_HDR = struct.Struct(">HBBBL")
_pack_hdr = pack_header = _HDR.pack
_unpack_hdr = _HDR.unpack_from
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")


class H2Failure(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class CodecStream:
    """The protocol state of one stream, kept on the stream object itself."""

    __slots__ = ("lclosed", "rdone", "rpend", "rw", "sid", "sw")
    sid: int
    sw: int  # send window (the client's, for our DATA)
    rw: int  # receive window (ours, for the client's DATA), as the client sees it
    rpend: int  # bytes consumed and not yet given back by WINDOW_UPDATE
    rdone: bool  # the client ended its side (END_STREAM) or reset the stream
    lclosed: bool  # we sent END_STREAM or RST_STREAM: no more frames from us


class H2Codec:
    """Framing and protocol state of one server-side HTTP/2 connection."""

    # (slots with the subclass's: a fast attribute layout, see pyvs.h2.stream.H2Stream)
    __slots__ = ("block_limit", "closed", "conn_window", "decoder", "hcount", "hflags", "highest", "hparts",
                 "hsid", "hsize", "max_frame", "max_list", "max_streams", "peer_frame", "peer_window",
                 "preface_seen", "rbuf", "rpend", "rwin", "settings_acked", "settings_seen", "stream_half",
                 "stream_window", "streams", "swin", "wq")
    streams: dict[int, H2Stream]
    closed: bool

    def codec_init(self, max_streams: int, stream_window: int, conn_window: int, max_frame: int,
                   max_list: int) -> None:
        """Our settings; what the client may send."""
        self.rbuf = b""
        self.preface_seen = False
        self.settings_seen = False
        self.settings_acked = False  # the client acknowledged our SETTINGS (our limits bind it)
        self.decoder = Decoder(list_limit=max_list)
        self.highest = 0  # highest stream id the client opened (or tried to)
        self.hsid = 0  # a header block in progress: its stream, flags, pieces, CONTINUATION count
        self.hflags = 0
        self.hparts: list[bytes] = []
        self.hsize = 0
        self.hcount = 0
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.stream_half = stream_window >> 1
        self.conn_window = conn_window
        self.max_frame = max_frame
        self.max_list = max_list
        self.block_limit = max(2 * max_list, 65536)
        self.rwin = DEFAULT_WINDOW  # connection receive window (raised to conn_window in start())
        self.rpend = 0
        self.swin = DEFAULT_WINDOW  # connection send window
        self.peer_window = DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_frame = 16384  # the client's SETTINGS_MAX_FRAME_SIZE
        self.wq: list[bytes] = []

    # -------------------------------------------------------------- hooks
    # (implemented by pyvs.h2.conn.H2ServerConnection)
    def new_stream(self, sid: int, fields: Fields, end: bool, list_size: int) -> None:
        raise NotImplementedError

    def on_control(self) -> bool:
        """A PING, SETTINGS or PRIORITY frame; True: the connection was closed."""
        raise NotImplementedError

    def on_empty(self) -> bool:
        """A DATA frame without data nor END_STREAM; True: closed."""
        raise NotImplementedError

    def on_reset_stream(self, st: H2Stream | None) -> bool:
        """RST_STREAM from the client (``st``: the stream, if pyvs still holds it); True: closed."""
        raise NotImplementedError

    def on_refused(self) -> None:
        """A stream refused for SETTINGS_MAX_CONCURRENT_STREAMS (counted; a client
        that keeps opening streams over the limit is a flood too)."""

    def on_stream_error(self) -> None:
        """We reset a stream for the client's fault: counted like the client's own
        resets (a client must not get many streams started and reset by provoking
        errors: "MadeYouReset", CVE-2025-8671)."""

    def on_ignored_block(self) -> bool:
        """A header block for a stream that is closed or was never opened (decoded
        for the HPACK table, then dropped); True: closed."""
        return False

    def on_goaway(self, code: int) -> None:
        raise NotImplementedError

    def on_send_window(self, st: H2Stream | None) -> None:
        """The client opened a window (``st`` None: the connection's, or every stream's)."""
        raise NotImplementedError

    def on_failure(self, failure: H2Failure) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------- start
    def start(self) -> None:
        """Our SETTINGS (RFC 9113 3.4) and the connection window we grant."""
        settings = _SETTING.pack(S_MAX_CONCURRENT_STREAMS, self.max_streams) \
            + _SETTING.pack(S_INITIAL_WINDOW_SIZE, self.stream_window) \
            + _SETTING.pack(S_MAX_FRAME_SIZE, self.max_frame) \
            + _SETTING.pack(S_MAX_HEADER_LIST_SIZE, self.max_list) \
            + _SETTING.pack(S_ENABLE_PUSH, 0)
        self._frame(SETTINGS, 0, 0, settings)
        extra = self.conn_window - DEFAULT_WINDOW
        if extra > 0:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(extra))
            self.rwin += extra

    # ----------------------------------------------------------- inbound
    def receive(self, data: bytes) -> None:
        """Bytes from the client: frames become calls on the hooks and the streams."""
        buf = self.rbuf + data if self.rbuf else data
        pos = 0
        n = len(buf)
        try:
            if not self.preface_seen:
                if n < 24:
                    if not PREFACE.startswith(buf):
                        raise H2Failure(PROTOCOL_ERROR, "not the HTTP/2 client preface")
                    self.rbuf = buf
                    return
                if buf[:24] != PREFACE:
                    raise H2Failure(PROTOCOL_ERROR, "not the HTTP/2 client preface")
                self.preface_seen = True
                pos = 24
            max_frame = self.max_frame
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = _unpack_hdr(buf, pos)
                length = hi << 8 | lo
                if length > max_frame:
                    raise H2Failure(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                end = pos + 9 + length
                if end > n:
                    break
                payload = buf[pos + 9 : end]
                pos = end
                sid &= 0x7FFFFFFF
                if self.hsid:
                    if ftype != CONTINUATION:
                        raise H2Failure(PROTOCOL_ERROR, "a frame inside a header block")
                    self._continuation(sid, flags, payload)
                elif ftype == HEADERS:
                    if length > self.block_limit:
                        raise H2Failure(ENHANCE_YOUR_CALM, "header block too large")
                    if flags & _PLAIN_HEADERS == END_HEADERS and sid & 1 and self.settings_seen:
                        self._block(sid, flags, payload)  # the common case: one frame, no padding
                    else:
                        self._headers(sid, flags, payload)
                elif ftype == DATA:
                    self._data(sid, flags, payload)
                elif not self.settings_seen and ftype != SETTINGS:
                    raise H2Failure(PROTOCOL_ERROR, "the first frame is not SETTINGS")
                elif ftype == WINDOW_UPDATE:
                    self._window_update(sid, payload)
                elif ftype == SETTINGS:
                    self._settings(sid, flags, payload)
                elif ftype == RST_STREAM:
                    self._rst_stream(sid, payload)
                elif ftype == PING:
                    if length != 8:
                        raise H2Failure(FRAME_SIZE_ERROR, "PING of a wrong size")
                    if sid:
                        raise H2Failure(PROTOCOL_ERROR, "PING on a stream")
                    if not flags & ACK:
                        if self.on_control():
                            return
                        self._frame(PING, ACK, 0, payload)
                elif ftype == PRIORITY:
                    if length != 5:
                        raise H2Failure(FRAME_SIZE_ERROR, "PRIORITY of a wrong size")
                    if not sid:
                        raise H2Failure(PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if self.on_control():
                        return
                elif ftype == GOAWAY:
                    if sid:
                        raise H2Failure(PROTOCOL_ERROR, "GOAWAY on a stream")
                    if length < 8:
                        raise H2Failure(FRAME_SIZE_ERROR, "GOAWAY too short")
                    self.on_goaway(_U32.unpack_from(payload, 4)[0])
                elif ftype == CONTINUATION:
                    raise H2Failure(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
                elif ftype == PUSH_PROMISE:
                    raise H2Failure(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # (unknown frame types are ignored: RFC 9113 5.5)
                if self.closed:
                    return
        except H2Failure as failure:
            self.rbuf = b""
            self.on_failure(failure)
            return
        self.rbuf = buf[pos:] if pos < n else b""

    def _headers(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid & 1:  # (0 or even: not a stream a client may open)
            raise H2Failure(PROTOCOL_ERROR, "HEADERS on an invalid stream id")
        if not self.settings_seen:
            raise H2Failure(PROTOCOL_ERROR, "the first frame is not SETTINGS")
        if flags & (PADDED | PRIORITY_FLAG):
            payload = _unpad(payload) if flags & PADDED else payload
            if flags & PRIORITY_FLAG:
                if len(payload) < 5:
                    raise H2Failure(FRAME_SIZE_ERROR, "HEADERS priority fields missing")
                payload = payload[5:]
        if flags & END_HEADERS:
            self._block(sid, flags, payload)
        else:
            self.hsid, self.hflags, self.hparts, self.hsize, self.hcount = sid, flags, [payload], len(payload), 0

    def _continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != self.hsid:
            raise H2Failure(PROTOCOL_ERROR, "CONTINUATION of another stream")
        self.hparts.append(payload)
        self.hsize += len(payload)
        self.hcount += 1
        if self.hcount > MAX_CONTINUATIONS or self.hsize > self.block_limit:
            raise H2Failure(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if flags & END_HEADERS:
            block = b"".join(self.hparts)
            self.hsid = 0
            self.hparts = []
            self._block(sid, self.hflags, block)

    def _block(self, sid: int, flags: int, block: bytes) -> None:
        """A whole header block: a new request, trailers, or one to drop."""
        dec = self.decoder
        hit = dec.cache.get(block)  # (Decoder.decode's own first step, without the call)
        if hit is not None and hit[0] == dec.gen:
            fields, size = hit[1], hit[2]
        else:
            try:
                fields, size = dec.decode(block)
            except HpackError as exc:
                raise H2Failure(COMPRESSION_ERROR, str(exc)) from None
        end = flags & END_STREAM != 0
        if sid > self.highest:
            self.highest = sid
            if len(self.streams) >= self.max_streams:
                self.reset_stream(sid, REFUSED_STREAM)  # RFC 9113 5.1.2: the client may retry it
                self.on_refused()
                return
            self.new_stream(sid, fields, end, size)
            return
        st = self.streams.get(sid)
        if st is None or (st.lclosed and st.rdone):
            self.on_ignored_block()  # a closed stream (reset by us, or done): ignored, counted
            return
        if st.rdone:
            self._stream_error(st, STREAM_CLOSED)
        elif not end:
            self._stream_error(st, PROTOCOL_ERROR)  # trailers that do not end the stream
        elif size > self.max_list:
            self._stream_error(st, PROTOCOL_ERROR)  # trailers over SETTINGS_MAX_HEADER_LIST_SIZE
        else:
            st.rdone = True
            st.on_trailers(fields)
            st.on_end()

    def _data(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise H2Failure(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        data = _unpad(payload) if flags & PADDED else payload
        self.rwin -= flow
        if self.rwin < 0:
            raise H2Failure(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        st = self.streams.get(sid)
        if st is None or st.rdone:
            if sid > self.highest:
                raise H2Failure(PROTOCOL_ERROR, "DATA on an idle stream")
            self._give_back(flow)
            if st is not None and not st.lclosed:
                self._stream_error(st, STREAM_CLOSED)
            return
        st.rw -= flow
        if st.rw < 0:
            self._give_back(flow)
            self._stream_error(st, FLOW_CONTROL_ERROR)
            return
        end = flags & END_STREAM
        if not data and not end:
            if self.on_empty():
                return
        if end:
            st.rdone = True
        st.on_data(data, flow)
        if end:
            st.on_end()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Failure(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not inc:
                raise H2Failure(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.swin += inc
            if self.swin > MAX_WINDOW:
                raise H2Failure(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            # Each one walks the waiting streams: tiny increments count as control frames.
            if inc < 1024 and self.on_control():
                return
            self.on_send_window(None)
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.highest:
                raise H2Failure(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if not inc:
            self._stream_error(st, PROTOCOL_ERROR)
            return
        st.sw += inc
        if st.sw > MAX_WINDOW:
            self._stream_error(st, FLOW_CONTROL_ERROR)
            return
        self.on_send_window(st)

    def _settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise H2Failure(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Failure(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self.settings_acked = True
            return
        if len(payload) % 6:
            raise H2Failure(FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        first = not self.settings_seen
        self.settings_seen = True
        if not first and self.on_control():
            return
        window = -1  # the last SETTINGS_INITIAL_WINDOW_SIZE of the frame: applied once, after
        for off in range(0, len(payload), 6):
            ident, value = _SETTING.unpack_from(payload, off)
            if ident == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Failure(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                window = value
            elif ident == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Failure(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_frame = value
            elif ident == S_ENABLE_PUSH:
                if value > 1:
                    raise H2Failure(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            # (HEADER_TABLE_SIZE: our encoder never inserts and starts each block with a
            # table size update to 0; the others do not bind a server)
        delta = window - self.peer_window if window >= 0 else 0
        if delta:
            self.peer_window = window
            for st in self.streams.values():
                st.sw += delta
                if st.sw > MAX_WINDOW:
                    raise H2Failure(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
        self._frame(SETTINGS, ACK, 0, b"")
        if delta:
            self.on_send_window(None)

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Failure(FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
        if not sid:
            raise H2Failure(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if sid > self.highest:
            raise H2Failure(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        st = self.streams.get(sid)
        if st is not None:
            st.rdone = st.lclosed = True  # closed both ways: nothing more is sent on it
        self.on_reset_stream(st)

    def _stream_error(self, st: H2Stream, code: int) -> None:
        """A stream error (RFC 9113 5.4.2): RST_STREAM, the stream's exchange ends."""
        self.reset_stream(st.sid, code)
        st.rdone = st.lclosed = True
        st.on_reset()
        self.on_stream_error()

    def _give_back(self, n: int) -> None:
        """Connection window for bytes that no stream will consume."""
        self.rpend += n
        if self.rpend >= self.conn_window >> 1:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.rpend))
            self.rwin += self.rpend
            self.rpend = 0

    # ---------------------------------------------------------- outbound
    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        wq = self.wq
        wq.append(_pack_hdr(n >> 8, n & 0xFF, ftype, flags, sid))
        if n:
            wq.append(payload)

    def send_head(self, st: H2Stream, head: bytes, end: bool) -> None:
        """A response head (HTTP/1 text, cached encoding) as HEADERS."""
        if not st.lclosed:
            self._block_out(st, encode_head(head), end)

    def send_fields(self, st: H2Stream, fields: Fields, end: bool) -> None:
        """A field list (trailers, pyvs's own replies) as HEADERS."""
        if not st.lclosed:
            self._block_out(st, encode(fields), end)

    def _block_out(self, st: H2Stream, block: bytes, end: bool) -> None:
        flags = END_STREAM if end else 0
        if end:
            st.lclosed = True
        size = self.peer_frame
        if len(block) <= size:
            self._frame(HEADERS, flags | END_HEADERS, st.sid, block)
            return
        self._frame(HEADERS, flags, st.sid, block[:size])
        pos = size
        while pos < len(block):
            piece = block[pos : pos + size]
            pos += size
            self._frame(CONTINUATION, END_HEADERS if pos >= len(block) else 0, st.sid, piece)

    def send_data(self, st: H2Stream, out: bytearray, end: bool) -> int:
        """DATA for what the windows allow of ``out``; returns the bytes taken (all of
        them for a stream closed meanwhile: they are dropped). ``end``: when all of it
        goes, the last frame carries END_STREAM."""
        total = len(out)
        if st.lclosed:
            return total
        window = st.sw if st.sw < self.swin else self.swin
        if window <= 0:
            return 0
        n = total if total < window else window
        last = end and n == total
        size = self.peer_frame
        sid = st.sid
        if n <= size:
            self._frame(DATA, END_STREAM if last else 0, sid, bytes(out) if n == total else bytes(out[:n]))
        else:
            with memoryview(out) as view:
                pos = 0
                while pos < n:
                    step = size if n - pos > size else n - pos
                    pos += step
                    self._frame(DATA, END_STREAM if last and pos == n else 0, sid, bytes(view[pos - step : pos]))
        st.sw -= n
        self.swin -= n
        if last:
            st.lclosed = True
        return n

    def send_last(self, st: H2Stream, body: bytes) -> None:
        """A whole body in one DATA frame with END_STREAM; the caller checked that it
        fits the windows and the frame size."""
        n = len(body)
        st.sw -= n
        self.swin -= n
        st.lclosed = True
        self._frame(DATA, END_STREAM, st.sid, body)

    def end_stream(self, st: H2Stream) -> None:
        """END_STREAM on an empty DATA frame."""
        if not st.lclosed:
            st.lclosed = True
            self._frame(DATA, END_STREAM, st.sid, b"")

    def reset_stream(self, sid: int, code: int) -> None:
        self._frame(RST_STREAM, 0, sid, _U32.pack(code))

    def ack(self, st: H2Stream, n: int) -> None:
        """``n`` request bytes of ``st`` consumed: give them back to both windows, one
        WINDOW_UPDATE per half window."""
        self.rpend += n
        if self.rpend >= self.conn_window >> 1:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.rpend))
            self.rwin += self.rpend
            self.rpend = 0
        if not st.rdone:
            st.rpend += n
            if st.rpend >= self.stream_half:
                self._frame(WINDOW_UPDATE, 0, st.sid, _U32.pack(st.rpend))
                st.rw += st.rpend
                st.rpend = 0

    def goaway_frame(self, last_sid: int, code: int, debug: bytes = b"") -> None:
        self._frame(GOAWAY, 0, 0, _U32.pack(last_sid) + _U32.pack(code) + debug)


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise H2Failure(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise H2Failure(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]

"""The server-side HTTP/2 codec (pyvs/h2/codec.py) against the ``h2`` library as the
client: paired in memory, no sockets, no clock."""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.h2.codec import (
    CONTINUATION,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    CodecStream,
    H2Codec,
    H2Failure,
)

REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


class Stream(CodecStream):
    def __init__(self, codec: Codec, sid: int, end: bool) -> None:
        self.sid, self.sw, self.rw, self.rpend, self.rdone, self.lclosed = sid, codec.peer_window, \
            codec.stream_window, 0, end, False
        self.data = bytearray()
        self.ended = end
        self.reset = False
        self.trailers: Any = None

    def on_data(self, data: bytes, flow: int) -> None:
        self.data += data

    def on_end(self) -> None:
        self.ended = True

    def on_trailers(self, fields: Any) -> None:
        self.trailers = fields

    def on_reset(self) -> None:
        self.reset = True


class Codec(H2Codec):
    """The codec with recording hooks."""

    def __init__(self, max_streams: int = 100, window: int = 65535) -> None:
        self.streams: dict[int, Any] = {}
        self.closed = False
        self.codec_init(max_streams, window, 1 << 20, 16384, 65536)
        self.requests: list[tuple[int, list[tuple[bytes, bytes]], bool]] = []
        self.failure: H2Failure | None = None
        self.windows: list[Any] = []
        self.controls = self.refused = self.resets = 0
        self.start()

    def new_stream(self, sid: int, fields: Any, end: bool, list_size: int) -> None:
        self.streams[sid] = Stream(self, sid, end)
        self.requests.append((sid, fields, end))

    def on_control(self) -> bool:
        self.controls += 1
        return False

    def on_empty(self) -> bool:
        return False

    def on_reset_stream(self, st: Any) -> bool:
        self.resets += 1
        return False

    def on_refused(self) -> None:
        self.refused += 1

    def on_goaway(self, code: int) -> None: ...

    def on_send_window(self, st: Any) -> None:
        self.windows.append(st)

    def on_failure(self, failure: H2Failure) -> None:
        self.failure = failure
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.wq)
        self.wq.clear()
        return data


class Pair:
    """An h2 client connected to a :class:`Codec` in memory."""

    def __init__(self, **kw: Any) -> None:
        self.server = Codec(**kw)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.events: list[Any] = []
        self.pump()

    def pump(self) -> list[Any]:
        for _ in range(10):
            out = self.client.data_to_send()
            if out:
                self.server.receive(out)
            back = self.server.take()
            if back:
                self.events += self.client.receive_data(back)
            if not out and not back:
                break
        return self.events

    def raw(self, data: bytes) -> None:
        self.server.receive(data)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


def test_settings_both_ways_and_a_request() -> None:
    p = Pair(max_streams=7)
    assert p.client.remote_settings.max_concurrent_streams == 7
    assert p.of(h2.events.SettingsAcknowledged)
    p.client.send_headers(1, [*REQ, (b"x-a", b"1")], end_stream=True)
    p.pump()
    assert p.server.requests == [(1, [*REQ, (b"x-a", b"1")], True)]


def test_response_head_body_and_trailers_reach_the_client() -> None:
    p = Pair()
    p.client.send_headers(1, REQ, end_stream=True)
    p.pump()
    st = p.server.streams[1]
    big = [(b"x-big", b"v" * 20000)]  # over one frame: HEADERS + CONTINUATION
    p.server.send_fields(st, [(b":status", b"200"), *big], False)
    out = bytearray(b"x" * 1000)
    assert p.server.send_data(st, out, False) == 1000
    p.server.send_fields(st, [(b"grpc-status", b"0")], True)
    p.pump()
    resp = p.of(h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"200"), *big]
    assert b"".join(e.data for e in p.of(h2.events.DataReceived)) == b"x" * 1000
    assert p.of(h2.events.TrailersReceived)[0].headers == [(b"grpc-status", b"0")]
    assert p.of(h2.events.StreamEnded)


def test_over_max_concurrent_streams_is_refused_not_the_connection() -> None:
    p = Pair(max_streams=2)
    p.client.local_settings.max_concurrent_streams = 100
    p.client.remote_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = [100]  # client ignores it
    for sid in (1, 3, 5):
        p.client.send_headers(sid, REQ, end_stream=True)
    p.pump()
    assert [r[0] for r in p.server.requests] == [1, 3]
    assert [(e.stream_id, e.error_code) for e in p.of(h2.events.StreamReset)] == [(5, REFUSED_STREAM)]
    assert p.server.refused == 1 and p.server.failure is None
    p.server.streams.pop(1)  # one finished: room for another
    p.client.send_headers(7, REQ, end_stream=True)
    p.pump()
    assert p.server.requests[-1][0] == 7


def test_send_data_respects_the_client_windows() -> None:
    p = Pair()
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    p.pump()
    p.client.send_headers(1, REQ, end_stream=True)
    p.pump()
    st = p.server.streams[1]
    assert st.sw == 1000
    p.server.send_fields(st, [(b":status", b"200")], False)
    out = bytearray(b"y" * 5000)
    assert p.server.send_data(st, out, True) == 1000
    assert p.server.send_data(st, out[1000:], True) == 0  # window closed
    p.pump()
    p.client.increment_flow_control_window(4000, stream_id=1)
    p.pump()
    assert st in p.server.windows and st.sw == 4000
    assert p.server.send_data(st, out[1000:], True) == 4000 and st.lclosed
    p.pump()
    assert sum(len(e.data) for e in p.of(h2.events.DataReceived)) == 5000 and p.of(h2.events.StreamEnded)


def test_window_updates_once_per_half_window() -> None:
    p = Pair()
    p.client.send_headers(1, REQ, end_stream=False)
    p.pump()
    st = p.server.streams[1]
    for _ in range(4):
        p.client.send_data(1, b"z" * 10000)
        p.pump()
        p.server.ack(st, 10000)
    p.pump()
    updates = [e for e in p.of(h2.events.WindowUpdated) if e.stream_id == 1]
    assert len(updates) == 1 and updates[0].delta == 40000  # one frame for 4 x 10000 (half window: 32767)
    assert bytes(st.data) == b"z" * 40000


def test_data_beyond_the_stream_window_is_a_stream_error() -> None:
    p = Pair(window=65535)
    p.client.send_headers(1, REQ, end_stream=False)
    p.pump()
    for _ in range(5):  # 5 x 16384 > 65535, bypassing the client's own flow control
        p.raw(frame(0, 0, 1, b"d" * 16384))
    p.events += p.client.receive_data(p.server.take())
    st = p.server.streams[1]
    assert st.reset and (1, FLOW_CONTROL_ERROR) in [(e.stream_id, e.error_code) for e in p.of(h2.events.StreamReset)]
    assert p.server.failure is None


def test_continuation_flood_ends_the_connection() -> None:
    p = Pair()
    p.raw(frame(HEADERS, 0, 1, b"\x82"))
    for _ in range(100):
        p.raw(frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b"))
        if p.server.failure:
            break
    assert p.server.failure is not None and p.server.failure.code == ENHANCE_YOUR_CALM


@pytest.mark.parametrize(("data", "why"), [
    (frame(HEADERS, 0, 1, b"\x82") + frame(6, 0, 0, b"12345678"), "a frame inside a header block"),
    (frame(HEADERS, 5, 2, b"\x82"), "an even stream id"),
    (frame(0, 0, 9, b"x"), "DATA on an idle stream"),
    (frame(CONTINUATION, 4, 1, b""), "CONTINUATION without HEADERS"),
    (frame(6, 0, 0, b"1234"), "PING of a wrong size"),
    (frame(8, 0, 0, b"\x00\x00\x00\x00"), "WINDOW_UPDATE of 0"),
    (frame(4, 0, 0, b"\x00\x05\x00\x00\x01\x00"), "a too small SETTINGS_MAX_FRAME_SIZE"),
    (frame(0, 0, 1, b"x" * 16385), "a frame over our SETTINGS_MAX_FRAME_SIZE"),
])
def test_protocol_errors_end_the_connection(data: bytes, why: str) -> None:
    p = Pair()
    p.raw(data)
    assert p.server.failure is not None, why
    assert p.server.failure.code in (PROTOCOL_ERROR, 6, 3), why


def test_first_frame_must_be_settings_and_preface_checked() -> None:
    c = Codec()
    c.receive(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(6, 0, 0, b"12345678"))
    assert c.failure is not None and c.failure.code == PROTOCOL_ERROR
    c = Codec()
    c.receive(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 10)
    assert c.failure is not None
    c = Codec()
    c.receive(b"PRI * HTTP/2.0\r\n")  # the preface in pieces
    assert c.failure is None


def test_trailers_padding_ping_and_resets() -> None:
    p = Pair()
    p.client.send_headers(1, REQ, end_stream=False)
    p.client.send_data(1, b"abc", pad_length=10)
    p.client.send_headers(1, [(b"x-t", b"1")], end_stream=True)
    p.client.ping(b"12345678")
    p.client.send_headers(3, REQ, end_stream=False)
    p.client.reset_stream(3, 8)
    p.pump()
    st = p.server.streams[1]
    assert bytes(st.data) == b"abc" and st.trailers == [(b"x-t", b"1")] and st.ended
    assert p.of(h2.events.PingAckReceived)[0].ping_data == b"12345678"
    st3 = p.server.streams[3]
    assert st3.rdone and st3.lclosed and p.server.resets == 1 and p.server.controls == 1


def test_headers_without_end_stream_as_trailers_is_a_stream_error() -> None:
    p = Pair()
    p.client.send_headers(1, REQ, end_stream=False)
    p.pump()
    block = p.client.encoder.encode([(b"x-t", b"1")])
    p.raw(frame(HEADERS, 4, 1, block))  # END_HEADERS only
    p.events += p.client.receive_data(p.server.take())
    assert p.server.streams[1].reset
    assert [(e.stream_id, e.error_code) for e in p.of(h2.events.StreamReset)] == [(1, PROTOCOL_ERROR)]


FRAMES = st.tuples(st.integers(0, 10), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 2**31 + 1]),
                   st.binary(max_size=40))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(FRAMES, max_size=12), st.integers(1, 50))
def test_any_frames_end_in_calls_or_a_connection_error_never_an_exception(
        frames: list[tuple[int, int, int, bytes]], cut: int) -> None:
    """Random frames (valid headers, any payload), fed in pieces: the codec raises
    nothing; what it refuses ends in on_failure."""
    c = Codec()
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + b"".join(frame(*f) for f in frames)
    for i in range(0, len(data), cut):
        c.receive(data[i : i + cut])
        if c.closed:
            break

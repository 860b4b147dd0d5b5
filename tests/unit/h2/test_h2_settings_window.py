"""SETTINGS_INITIAL_WINDOW_SIZE moves the open streams' send windows once per frame.

A SETTINGS frame may repeat an identifier; only the last value counts (RFC 9113
6.5.3: values are processed in order). Applying each repeated entry to every open
stream made one 16 KiB frame (2,730 entries) over 128 streams cost ~350,000 window
changes: a cheap frame for the client, an expensive one for pyvs. The codec keeps
the last value of the frame and walks the streams once (pyvs/h2/codec.py
``_settings``). The cost is counted here, not timed: each stream's ``sw`` is a
property that counts its writes.
"""

from __future__ import annotations

import struct
from typing import Any

from pyvs.h2.codec import FLOW_CONTROL_ERROR, MAX_WINDOW, SETTINGS, CodecStream, H2Codec, H2Failure

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
INITIAL_WINDOW_SIZE = 4


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


def settings_frame(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", i, v) for i, v in pairs))


class CountingStream(CodecStream):
    """A stream whose send window counts how often it is written."""

    writes = 0  # (on the class: all streams of a test together)

    def __init__(self, sid: int, window: int) -> None:
        self.sid, self._sw, self.rw, self.rpend, self.rdone, self.lclosed = sid, window, 65535, 0, False, False

    @property  # type: ignore[override]
    def sw(self) -> int:
        return self._sw

    @sw.setter
    def sw(self, value: int) -> None:
        CountingStream.writes += 1
        self._sw = value


class Codec(H2Codec):
    """The codec with recording hooks and ``n`` open streams."""

    def __init__(self, n: int) -> None:
        self.streams: dict[int, Any] = {}
        self.closed = False
        self.codec_init(128, 65535, 1 << 20, 16384, 65536)
        self.failure: H2Failure | None = None
        self.window_calls: list[Any] = []
        self.controls = 0
        self.start()
        self.receive(PREFACE + settings_frame())
        for k in range(n):
            sid = 2 * k + 1
            self.streams[sid] = CountingStream(sid, self.peer_window)
        self.wq.clear()
        CountingStream.writes = 0

    def on_control(self) -> bool:
        self.controls += 1
        return False

    def on_send_window(self, st: Any) -> None:
        self.window_calls.append(st)

    def on_failure(self, failure: H2Failure) -> None:
        self.failure = failure
        self.closed = True


def acks(c: Codec) -> int:
    data = b"".join(c.wq)
    return sum(1 for i in range(0, len(data), 9) if data[i + 3] == SETTINGS and data[i + 4] == 1)


def test_a_thousand_repeated_entries_change_each_stream_window_once() -> None:
    c = Codec(100)
    # Alternating values: applied entry by entry, every one of them would be a change.
    values = [100_000 if i % 2 else 20_000 for i in range(999)] + [70_000]
    c.receive(settings_frame(*((INITIAL_WINDOW_SIZE, v) for v in values)))
    assert c.failure is None
    assert CountingStream.writes == 100  # one per open stream, not 1,000 x 100
    assert c.window_calls == [None]  # the waiting streams are woken once
    assert acks(c) == 1 and c.controls == 1


def test_the_last_value_of_the_frame_is_the_window() -> None:
    c = Codec(3)
    c.streams[1].sw -= 1000  # 1000 bytes already sent on stream 1
    c.receive(settings_frame((INITIAL_WINDOW_SIZE, 0), (INITIAL_WINDOW_SIZE, 1 << 20),
                             (INITIAL_WINDOW_SIZE, 16384), (INITIAL_WINDOW_SIZE, 30_000)))
    assert c.failure is None
    assert c.peer_window == 30_000
    assert {sid: st.sw for sid, st in c.streams.items()} == {1: 29_000, 3: 30_000, 5: 30_000}
    # A window may go below zero (RFC 9113 6.9.2): stream 3 has used all of its 30,000.
    c.streams[3].sw -= 30_000
    c.receive(settings_frame((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 500)))
    assert c.streams[3].sw == -29_500 and c.streams[1].sw == -500 and c.peer_window == 500


def test_repeating_the_current_value_changes_nothing() -> None:
    c = Codec(50)
    c.receive(settings_frame(*((INITIAL_WINDOW_SIZE, 65535) for _ in range(500))))
    assert c.failure is None and CountingStream.writes == 0 and c.window_calls == []
    assert acks(c) == 1


def test_a_value_over_the_maximum_anywhere_in_the_frame_is_an_error() -> None:
    c = Codec(10)
    c.receive(settings_frame((INITIAL_WINDOW_SIZE, 1000), (INITIAL_WINDOW_SIZE, MAX_WINDOW + 1),
                             (INITIAL_WINDOW_SIZE, 2000)))
    assert c.failure is not None and c.failure.code == FLOW_CONTROL_ERROR
    assert CountingStream.writes == 0 and acks(c) == 0


def test_a_final_window_over_the_maximum_is_an_error() -> None:
    c = Codec(2)
    c.streams[1].sw = MAX_WINDOW - 10  # opened by WINDOW_UPDATEs
    c.receive(settings_frame((INITIAL_WINDOW_SIZE, 65535 + 11)))
    assert c.failure is not None and c.failure.code == FLOW_CONTROL_ERROR

"""HTTP/2 front end against a hostile or unusual client, frame by frame (review of the
codec, pyvs/h2/codec.py). A raw client writes the frames (hpack encodes the blocks),
so it can do what well-behaved libraries refuse to: reset a stream holding unsent
bytes, provoke stream errors in a loop ("MadeYouReset"), send an absolute URI as
:path, shrink the HPACK table, send malformed trailers after the response began."""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hpack
import pytest

from pyvs.h2.headerblock import Decoder
from tests.integration.harness import Backend, LoopThread, Pyvs, free_port

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 7, 8
END_STREAM, END_HEADERS = 1, 4


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, sid) + payload


def settings(**kw: int) -> bytes:
    ids = {"header_table_size": 1, "max_concurrent": 3, "initial_window": 4}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", ids[k], v) for k, v in kw.items()))


class Raw:
    """One h2c connection, frames in and out by hand."""

    def __init__(self, port: int, **peer_settings: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        self.sock.sendall(PREFACE + settings(**peer_settings))

    def request(self, sid: int, path: str, *, method: str = "GET", end: bool = True,
                extra: tuple[tuple[str, str], ...] = ()) -> bytes:
        block = self.enc.encode([(":method", method), (":scheme", "http"), (":authority", "t"),
                                 (":path", path), *extra])
        return frame(HEADERS, (END_STREAM if end else 0) | END_HEADERS, sid, block)

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def read(self, until: Any, timeout: float = 10.0) -> list[tuple[int, int, int, Any]]:
        """Frames until ``until(frames)`` holds (or EOF: ("EOF", ...) last)."""
        out: list[tuple[int, int, int, Any]] = []
        deadline = time.monotonic() + timeout
        while not until(out):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; frames so far: {out[-5:]}"
            if select.select([self.sock], [], [], left)[0]:
                try:
                    data = self.sock.recv(1 << 20)
                except ConnectionResetError:
                    data = b""
                if not data:
                    out.append((-1, 0, 0, None))
                    return out
                self.buf += data
            while len(self.buf) >= 9:
                hi, lo, ftype, flags, sid = struct.unpack(">HBBBL", self.buf[:9])
                n = hi << 8 | lo
                if len(self.buf) < 9 + n:
                    break
                payload = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                if ftype == SETTINGS and not flags & 1:
                    self.send(frame(SETTINGS, 1, 0))  # ACK: our limits bind from here
                out.append((ftype, flags, sid & 0x7FFFFFFF,
                            dict(self.dec.decode(payload, raw=True)) if ftype == HEADERS else payload))
        return out

    def close(self) -> None:
        self.sock.close()


def ended(sid: int) -> Any:
    return lambda fr: any(f[2] == sid and f[1] & END_STREAM and f[0] in (DATA, HEADERS) for f in fr) or \
        any(f[0] in (-1, GOAWAY) for f in fr)


def body(frames: list[tuple[int, int, int, Any]], sid: int) -> bytes:
    return b"".join(f[3] for f in frames if f[0] == DATA and f[2] == sid)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[tuple[int, Backend]]:
    web = Backend(loop_thread, "web")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "h2c", "bind": [f"127.0.0.1:{port}"], "http2": True,
                       "routes": [{"match": {"host": "internal.example"}, "deny": {"status": 403}},
                                  {"match": {"path_prefix": "/down"}, "backend": "down"},
                                  {"backend": "web"}]}],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]},
                     {"name": "down", "retries": 0,
                      "servers": [{"name": "d1", "address": f"127.0.0.1:{free_port()}"}]}],
    }
    p = Pyvs(cfg, tmp_path_factory.mktemp("h2abuse"), workers=1)
    yield port, web
    p.stop()
    web.close()
    log = p.log.read_text()
    assert "Traceback" not in log, log[-5000:]


def test_a_reset_stream_leaves_nothing_for_the_next_one(rig: tuple[int, Backend]) -> None:
    """A response held back by a closed window, then the stream reset (a browser leaving
    the page): the next stream on the connection gets its own body, nothing of the old."""
    port, _ = rig
    c = Raw(port, initial_window=0)
    try:
        c.send(c.request(1, "/big?size=5000"))
        c.read(lambda fr: any(f[0] == HEADERS and f[2] == 1 for f in fr))
        c.send(frame(RST_STREAM, 0, 1, struct.pack(">L", 8)), settings(initial_window=65535), c.request(3, "/name"))
        got = c.read(ended(3))
        assert body(got, 3) == b"web"
    finally:
        c.close()


def test_provoked_stream_errors_count_as_resets(rig: tuple[int, Backend]) -> None:
    """HEADERS then WINDOW_UPDATE(stream, 0) -- a stream error pyvs answers with
    RST_STREAM -- over and over: closed like a rapid reset, not 1000 requests."""
    port, web = rig
    before = web.requests
    c = Raw(port)
    try:
        for base in range(1, 2001, 200):
            c.send(*(c.request(sid, "/slow") + frame(WINDOW_UPDATE, 0, sid, struct.pack(">L", 0))
                     for sid in range(base, base + 200, 2)))
        got = c.read(lambda fr: any(f[0] in (GOAWAY, -1) for f in fr), timeout=20)
        goaway = [f for f in got if f[0] == GOAWAY]
        assert goaway and struct.unpack(">L", goaway[0][3][4:8])[0] == 11  # ENHANCE_YOUR_CALM
    finally:
        c.close()
    assert web.requests - before < 400


def test_an_absolute_uri_path_is_refused(rig: tuple[int, Backend]) -> None:
    """:path must be an absolute path (or * for OPTIONS): a URI there would reach the
    server with a host that routing (here a host deny rule) never saw."""
    port, web = rig
    before = web.requests
    c = Raw(port)
    try:
        c.send(c.request(1, "http://internal.example/x"), c.request(3, "*"))
        got = c.read(lambda fr: ended(1)(fr) and ended(3)(fr))
        statuses = {f[2]: f[3][b":status"] for f in got if f[0] == HEADERS}
        assert statuses == {1: b"400", 3: b"400"}
    finally:
        c.close()
    assert web.requests == before


def test_malformed_trailers_reset_the_stream(rig: tuple[int, Backend]) -> None:
    """Trailers with a pseudo-field make the request malformed (RFC 9113 8.1.1): a
    stream error, never a second response on the stream."""
    port, _ = rig
    c = Raw(port)
    try:
        c.send(c.request(1, "/name", method="POST", end=False), frame(DATA, 0, 1, b"x" * 10))
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([(":path", "/evil")])))
        got = c.read(lambda fr: any(f[0] == RST_STREAM and f[2] == 1 for f in fr) or ended(1)(fr))
        resets = [f for f in got if f[0] == RST_STREAM and f[2] == 1]
        assert resets and struct.unpack(">L", resets[0][3])[0] == 1  # PROTOCOL_ERROR
        assert not [f for f in got if f[0] == HEADERS and f[2] == 1]
    finally:
        c.close()


def test_a_burst_over_the_stream_limit_before_settings_is_refused_not_killed(rig: tuple[int, Backend]) -> None:
    """A client may open more streams than our limit before it has read our SETTINGS
    (RFC 9113 5.1.2): the extra ones are refused, the others are answered."""
    port, _ = rig
    c = Raw(port)
    try:
        # No ACK of our SETTINGS yet: all of it in the first flight.
        c.send(*(c.request(sid, "/name") for sid in range(1, 801, 2)))
        got = c.read(lambda fr: sum(1 for f in fr if (f[0] == DATA and f[1] & END_STREAM) or f[0] == RST_STREAM)
                     >= 400 or any(f[0] in (GOAWAY, -1) for f in fr), timeout=30)
        assert not [f for f in got if f[0] == GOAWAY]
        answered = {f[2] for f in got if f[0] == DATA and f[1] & END_STREAM}
        refused = {f[2] for f in got if f[0] == RST_STREAM}
        assert len(answered) >= 100 and len(answered) + len(refused) == 400
    finally:
        c.close()


def test_a_client_with_a_small_header_table_is_served(rig: tuple[int, Backend]) -> None:
    """SETTINGS_HEADER_TABLE_SIZE below 4096 (nghttp --header-table-size): our blocks
    start with a table size update, as RFC 7541 requires."""
    port, _ = rig
    for size in ("0", "1024"):
        r = subprocess.run(["nghttp", "-n", "--stat", f"--header-table-size={size}",
                            f"http://127.0.0.1:{port}/name"], capture_output=True, timeout=30)
        assert r.returncode == 0 and b"GOAWAY" not in r.stderr, (size, r.stdout[-500:], r.stderr[-500:])


def test_response_blocks_suit_a_client_with_no_header_table() -> None:
    """A decoder whose table may hold nothing (SETTINGS_HEADER_TABLE_SIZE 0) requires
    a table size update first: every block we encode starts with one."""
    from pyvs.h2.headerblock import encode

    d = hpack.Decoder()
    d.max_allowed_table_size = 0
    assert d.decode(encode([(b":status", b"200"), (b"server", b"x")]), raw=True) == [
        (b":status", b"200"), (b"server", b"x")]


def test_hpack_table_size_update_keeps_the_entries_that_fit() -> None:
    enc = hpack.Encoder()
    d = Decoder()
    d.decode(enc.encode([("x-a", "1")]))  # inserted: index 62
    fields, _ = d.decode(b"\x3f\xe1\x1f\xbe")  # size update to the same 4096, then index 62
    assert fields == [(b"x-a", b"1")]


def test_large_reference_blocks_are_not_remembered() -> None:
    d = Decoder()
    d.decode(hpack.Encoder().encode([("x-a", "1")]))
    big = b"\xbe" * 5000  # 5000 references to one entry: decoded, never cached
    d.decode(big)
    assert big not in d.cache


def test_bodies_of_answered_streams_go_back_to_the_connection_window(rig: tuple[int, Backend]) -> None:
    """POSTs to a server that is down: each body is held while pyvs connects, then the
    stream gets its 502. The held bytes must go back to the connection window, or after
    about 1 MiB (its size) the client could send nothing more on the connection."""
    port, _ = rig
    c = Raw(port)
    try:
        piece = b"x" * 16383
        for i in range(40):  # 40 x 64 KiB: more than twice the connection window
            sid = 2 * i + 1
            c.send(c.request(sid, "/down/upload", method="POST", end=False),
                   *(frame(DATA, END_STREAM if k == 3 else 0, sid, piece + (b"x" if k < 3 else b"")) for k in range(4)))
            got = c.read(lambda fr, sid=sid: ended(sid)(fr) or any(f[0] == RST_STREAM and f[2] == sid for f in fr))
            assert not [f for f in got if f[0] in (GOAWAY, -1)], f"connection ended at request {i}"
    finally:
        c.close()



def test_tiny_connection_window_updates_count_as_control_frames(rig: tuple[int, Backend]) -> None:
    """Each connection WINDOW_UPDATE walks the waiting streams: a flood of 1-byte ones
    is closed like a PING flood (GOAWAY ENHANCE_YOUR_CALM)."""
    port, _ = rig
    c = Raw(port)
    try:
        c.send(*(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1)) for _ in range(600)))
        got = c.read(lambda fr: any(f[0] in (GOAWAY, -1) for f in fr))
        goaway = [f for f in got if f[0] == GOAWAY]
        assert goaway and struct.unpack(">L", goaway[0][3][4:8])[0] == 11
    finally:
        c.close()


def test_header_blocks_for_closed_streams_are_counted(rig: tuple[int, Backend]) -> None:
    """A header block for a stream that is over is decoded (for the HPACK table) and
    dropped: free for the client unless counted, so a flood of them is closed."""
    port, _ = rig
    c = Raw(port)
    try:
        c.send(c.request(1, "/name"))
        c.read(ended(1))
        c.send(*(c.request(1, "/name") for _ in range(600)))  # stream 1 again and again
        got = c.read(lambda fr: any(f[0] in (GOAWAY, -1) for f in fr))
        goaway = [f for f in got if f[0] == GOAWAY]
        assert goaway and struct.unpack(">L", goaway[0][3][4:8])[0] == 11
    finally:
        c.close()


def test_one_header_frame_is_bounded_like_a_block(tmp_path: Path, loop_thread: LoopThread) -> None:
    """With max_frame_size raised above the header block bound (twice max_header_size),
    one HEADERS frame could carry more than a block may: it is refused like a long
    CONTINUATION chain (GOAWAY ENHANCE_YOUR_CALM), before it is decoded."""
    web = Backend(loop_thread, "web")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "h2c", "bind": [f"127.0.0.1:{port}"], "http2": True, "backend": "web",
                       "http2_limits": {"max_frame_size": 262144}}],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    c = Raw(port)
    try:
        block = c.enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/name"),
                              ("x-big", "y" * 200_000)])
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
        got = c.read(lambda fr: any(f[0] in (GOAWAY, -1) for f in fr))
        goaway = [f for f in got if f[0] == GOAWAY]
        assert goaway and struct.unpack(">L", goaway[0][3][4:8])[0] == 11
    finally:
        c.close()
        p.stop()
        web.close()

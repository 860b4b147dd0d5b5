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
from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, pattern

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


PING = 6
PING_BATCH = 1000  # PINGs per write of the client below (17,000 bytes)
UNREAD_CAP = 64 << 20  # bytes the non-reading client tries to push: far over any socket buffering


def vm_rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_is_not_read(tmp_path: Path, loop_thread: LoopThread) -> None:
    """CVE-2019-9517 (internal data buffering): a client keeps sending PINGs and
    requests for large responses and never reads. Each asks for an answer (PING ACK,
    HEADERS and DATA, RST_STREAM for a stream over the limit); once pyvs's writes to
    it are blocked, pyvs stops reading it, so the answers wait in the client's own
    socket, not in pyvs's memory. The flood limits are raised out of the way: they
    bound the rate of such frames, not the bytes held. Meanwhile another client on
    the same worker is served; when the client reads again, every PING is answered
    and every stream completes."""
    web = Backend(loop_thread, "web")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "h2c", "bind": [f"127.0.0.1:{port}"], "http2": True, "backend": "web",
                       "http2_limits": {"max_control_frames": 100_000_000, "max_resets": 1_000_000,
                                        "max_concurrent_streams": 16, "buffer": 65536}}],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    sock = socket.socket()
    try:
        pid = p.status()["workers"][0]["pid"]
        warm = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/big?size=300000")
        assert warm.returncode == 0 and len(warm.stdout) == 300000
        rss_before = vm_rss(pid)

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connect: a small window)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        enc = hpack.Encoder()
        size = 300_000
        # Windows wide open: only the socket holds the responses back. Our SETTINGS are
        # acknowledged unread (a client that does not read cannot see them).
        sock.sendall(PREFACE + settings(initial_window=1 << 30) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 30))
                     + frame(SETTINGS, 1, 0))
        pings = b"".join(frame(PING, 0, 0, b"pyvs-ack") for _ in range(PING_BATCH))
        sock.setblocking(False)
        sent = batches = 0
        sids: list[int] = []
        pending = memoryview(b"")
        stalled = False
        while sent < UNREAD_CAP:
            if not pending:
                batches += 1
                out = pings
                if len(sids) < 64:  # a request for a large response with each of the first batches
                    sids.append(2 * len(sids) + 1)
                    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "t"),
                                        (":path", f"/big?size={size}")])
                    out = frame(HEADERS, END_STREAM | END_HEADERS, sids[-1], block) + pings
                pending = memoryview(out)
            if not select.select([], [sock], [], 3.0)[1]:
                stalled = True  # no room in 3 s: pyvs has stopped reading us
                break
            try:
                n = sock.send(pending)
            except BlockingIOError:
                continue
            sent += n
            pending = pending[n:]
        grown = vm_rss(pid) - rss_before
        assert stalled, f"pyvs read all of {sent} bytes from a client that reads nothing"
        assert grown < 24 << 20, f"worker memory grew by {grown} bytes for {sent} bytes unread"

        other = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/name")
        assert other.returncode == 0 and other.stdout == b"web", other

        # The client reads again: the rest of its last batch goes, everything is answered.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        acked = 0
        bodies: dict[int, list[bytes]] = {}
        finished: set[int] = set()
        refused: set[int] = set()
        buf = bytearray()
        deadline = time.monotonic() + 60
        last_sid = 2 * len(sids) + 1
        while acked < batches * PING_BATCH or len(finished) + len(refused) < len(sids) or last_sid not in finished:
            assert time.monotonic() < deadline, (acked, batches * PING_BATCH, len(finished), len(refused))
            if not pending and acked == batches * PING_BATCH and len(finished) + len(refused) == len(sids):
                block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/name")])
                pending = memoryview(frame(HEADERS, END_STREAM | END_HEADERS, last_sid, block))
                sids.append(last_sid)
            r, w, _ = select.select([sock], [sock] if pending else [], [], 10.0)
            if w:
                try:
                    pending = pending[sock.send(pending):]
                except BlockingIOError:
                    pass
            if not r:
                continue
            data = sock.recv(1 << 20)
            assert data, "pyvs closed the connection"
            buf += data
            pos = 0
            while len(buf) - pos >= 9:
                n = int.from_bytes(buf[pos : pos + 3], "big")
                if len(buf) - pos < 9 + n:
                    break
                ftype, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9 : pos + 9 + n])
                pos += 9 + n
                assert ftype != GOAWAY, payload
                if ftype == PING:
                    assert flags == 1 and payload == b"pyvs-ack"
                    acked += 1
                elif ftype == DATA:
                    bodies.setdefault(sid, []).append(payload)
                    if flags & END_STREAM:
                        finished.add(sid)
                elif ftype == RST_STREAM:
                    assert struct.unpack(">L", payload)[0] == 7, (sid, payload)  # REFUSED_STREAM
                    refused.add(sid)
            del buf[:pos]
        assert acked == batches * PING_BATCH
        assert len(finished) >= 16 and not finished & refused
        big = pattern(size)
        for sid in finished - {last_sid}:
            assert b"".join(bodies[sid]) == big, sid
        assert b"".join(bodies[last_sid]) == b"web"
    finally:
        sock.close()
        p.stop()
        web.close()


def test_an_upload_that_stops_is_timed_out_and_answered_ones_are_not(tmp_path: Path, loop_thread: LoopThread) -> None:
    """A stream joins the worker's timeout sweep only when it first gets a deadline
    (pyvs/h2/stream.py H2Stream.deadline): a request body that stops coming must still
    end after the client timeout (408 or a reset), and streams answered at once on
    the same connection must leave no timer that later touches the connection."""
    web = Backend(loop_thread, "web")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "h2c", "bind": [f"127.0.0.1:{port}"], "http2": True, "backend": "web",
                       "timeouts": {"client": "1s"}}],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    c = Raw(port)
    try:
        c.send(*(c.request(sid, "/name") for sid in range(1, 41, 2)))
        c.read(lambda fr: all(ended(sid)(fr) for sid in range(1, 41, 2)))
        c.send(c.request(41, "/upload", method="POST", end=False, extra=(("content-length", "1000"),)),
               frame(DATA, 0, 41, b"x" * 10))
        started = time.monotonic()
        got = c.read(lambda fr: ended(41)(fr) or any(f[0] == RST_STREAM and f[2] == 41 for f in fr), timeout=15)
        assert time.monotonic() - started >= 0.9  # the client timeout, not at once
        assert not [f for f in got if f[0] in (GOAWAY, -1)]
        heads = [f[3] for f in got if f[0] == HEADERS and f[2] == 41]
        assert not heads or heads[0][b":status"] == b"408", heads
        c.send(c.request(43, "/name"))  # the connection is still good
        assert body(c.read(ended(43)), 43) == b"web"
    finally:
        c.close()
        p.stop()
        web.close()
    assert "Traceback" not in p.log.read_text()

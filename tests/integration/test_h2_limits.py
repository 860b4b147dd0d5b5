"""HTTP/2 flow control, limits, floods and graceful drain, end to end (docs/http2.md).

A raw client built on the ``h2`` library drives what curl cannot: a stream whose
window is never opened, resets and PING/SETTINGS floods, CONTINUATION floods, a
reload with a stream in flight. Each abuse test checks that a normal client on
another connection keeps being served meanwhile."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, pattern

ENHANCE_YOUR_CALM = 11
REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/name")]


class Client:
    """A blocking HTTP/2 client on one connection (h2c with prior knowledge)."""

    def __init__(self, port: int, *, conn_window: int = 0, validate: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.closed = False
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate,
            normalize_outbound_headers=validate))  # (validate=False: malformed requests can be sent)
        self.c.initiate_connection()
        if conn_window:
            self.c.increment_flow_control_window(conn_window)
        self.send()
        self.bodies: dict[int, bytearray] = {}
        self.status: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.trailers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.got_settings = False

    def send(self) -> None:
        data = self.c.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True  # (pyvs closed it: what it said before is still read)

    def get(self, path: str, *, end: bool = True) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [*REQ[:3], (b":path", path.encode())], end_stream=end)
        self.send()
        return sid

    def pump(self, until: Callable[[], bool], timeout: float = 15, ack: Callable[[int], bool] = lambda s: True) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting")
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return
            if self.goaway is not None and self.c.state_machine.state.name == "CLOSED":
                continue  # (after GOAWAY the h2 client takes no more frames: only wait for the close)
            for ev in self.c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.status[ev.stream_id] = dict(ev.headers)[b":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    self.bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    if ack(ev.stream_id):
                        self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    self.trailers[ev.stream_id] = ev.headers
                elif isinstance(ev, h2.events.StreamReset):
                    self.resets[ev.stream_id] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev
                elif isinstance(ev, h2.events.RemoteSettingsChanged):
                    self.got_settings = True
            self.send()

    def close(self) -> None:
        self.sock.close()


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.web = Backend(lt, "web")
        self.port, self.short = free_port(), free_port()
        cfg: dict[str, Any] = {
            "listeners": [{"name": "h2c", "bind": [f"127.0.0.1:{self.port}"], "http2": True, "backend": "web"},
                          {"name": "short", "bind": [f"127.0.0.1:{self.short}"], "http2": True, "backend": "web",
                           "timeouts": {"client": "1s"}}],
            "backends": [{"name": "web", "servers": [{"name": "w1", "address": self.web.address}]}],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def workers_rss(self) -> int:
        total = 0
        for w in self.pyvs.status()["workers"]:
            for line in Path(f"/proc/{w['pid']}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def close(self) -> None:
        self.pyvs.stop()
        self.web.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("h2limits"))
    yield e
    e.close()
    log = e.pyvs.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-5000:]


class Bystander:
    """A normal client on its own connections, requesting in a loop while a test runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{self.port}/name")
            self.results.append(r.stdout if r.returncode == 0 else r.stderr)

    def finish(self) -> list[bytes]:
        while len(self.results) < 3:
            time.sleep(0.05)
        self.stop.set()
        self.thread.join(30)
        return self.results


def test_slow_stream_never_stalls_others_and_holds_its_server(env: Env) -> None:
    size = 40_000_000
    cl = Client(env.port, conn_window=200_000_000)
    try:
        rss0 = env.workers_rss()
        slow = cl.get(f"/big?size={size}")
        # The slow stream's window is never opened: it gets its first 65535 bytes only.
        cl.pump(lambda: len(cl.bodies.get(slow, b"")) >= 65535, ack=lambda s: s != slow)
        fast = [cl.get("/big?size=300000") for _ in range(3)]
        cl.pump(lambda: all(s in cl.ended for s in fast), ack=lambda s: s != slow)
        assert all(bytes(cl.bodies[s]) == pattern(300000) for s in fast)
        assert len(cl.bodies[slow]) == 65535
        time.sleep(0.5)  # (a server not held would have pushed its 40 MB through by now)
        assert env.workers_rss() - rss0 < 20_000_000
        # Open the window: the rest arrives, byte exact.
        cl.c.acknowledge_received_data(len(cl.bodies[slow]), slow)
        cl.send()
        cl.pump(lambda: slow in cl.ended, timeout=60)
        assert cl.status[slow] == b"200" and bytes(cl.bodies[slow]) == pattern(size)
    finally:
        cl.close()


def test_window_never_opened_resets_the_stream_after_the_client_timeout(env: Env) -> None:
    cl = Client(env.short, conn_window=10_000_000)
    try:
        stuck = cl.get("/big?size=200000")  # under the stream buffer: the server part ends at once
        cl.pump(lambda: stuck in cl.resets, ack=lambda s: False, timeout=20)
        assert cl.resets[stuck] == 2 and len(cl.bodies[stuck]) == 65535  # INTERNAL_ERROR: visibly cut
        other = cl.get("/name")  # the connection itself is still good
        cl.pump(lambda: other in cl.ended)
        assert bytes(cl.bodies[other]) == b"web"
    finally:
        cl.close()


def test_rapid_reset_is_answered_with_goaway(env: Env) -> None:
    by = Bystander(env.port)
    cl = Client(env.port)
    try:
        for _ in range(20):
            for _ in range(50):
                sid = cl.c.get_next_available_stream_id()
                cl.c.send_headers(sid, REQ, end_stream=True)
                cl.c.reset_stream(sid, 8)  # CANCEL
            cl.send()
        cl.pump(lambda: cl.goaway is not None)
        assert cl.goaway is not None and cl.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        cl.close()
    assert all(r == b"web" for r in by.finish())


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_floods_are_answered_with_goaway(env: Env, kind: str) -> None:
    by = Bystander(env.port)
    cl = Client(env.port)
    try:
        for i in range(2000):
            if kind == "ping":
                cl.c.ping(b"%08d" % i)
            else:
                cl.c.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100 + i % 2})
            if i % 100 == 99:
                cl.send()
        cl.pump(lambda: cl.goaway is not None)
        assert cl.goaway is not None and cl.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        cl.close()
    assert all(r == b"web" for r in by.finish())


def test_continuation_flood_is_cut_off(env: Env) -> None:
    by = Bystander(env.port)
    cl = Client(env.port)
    try:
        block = cl.c.encoder.encode(REQ)
        frames = [HeadersFrame(1, data=block[:4]).serialize()]
        cont = ContinuationFrame(1, data=b"\x40\x01a\x01b")  # literal "a: b", again and again
        frames += [cont.serialize()] * 5000
        try:
            cl.sock.sendall(b"".join(frames))
        except OSError:
            pass
        cl.pump(lambda: cl.goaway is not None or cl.closed)
        assert cl.goaway is not None or cl.closed
        assert 1 not in cl.status
    finally:
        cl.close()
    assert all(r == b"web" for r in by.finish())


def test_oversized_header_list_is_refused(env: Env) -> None:
    cl = Client(env.port)
    try:
        cl.pump(lambda: cl.got_settings)
        sid = cl.c.get_next_available_stream_id()
        big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(100)]  # 100 kB > max_header_size (64k)
        cl.c.send_headers(sid, [*REQ, *big], end_stream=True)
        cl.send()
        cl.pump(lambda: cl.goaway is not None or cl.closed or sid in cl.ended or sid in cl.resets)
        assert cl.status.get(sid, b"431") == b"431"
    finally:
        cl.close()


def test_reload_sends_goaway_and_lets_streams_finish(env: Env) -> None:
    before = env.web.requests
    slow = subprocess.Popen(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "-w", " %{http_version}",
                             f"http://127.0.0.1:{env.port}/slow?delay=1.5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    idle = Client(env.port)
    try:
        idle.pump(lambda: idle.got_settings)
        deadline = time.monotonic() + 10
        while env.web.requests == before and time.monotonic() < deadline:
            time.sleep(0.02)  # (the backend counts the request when it arrives)
        env.pyvs.proc.send_signal(signal.SIGHUP)
        idle.pump(lambda: idle.goaway is not None, timeout=15)
        assert idle.goaway is not None and idle.goaway.error_code == 0
        idle.pump(lambda: idle.closed, timeout=15)  # an idle connection closes at once
    finally:
        idle.close()
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 0 and out == b"slow web 2", err  # the stream in flight finished
    r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{env.port}/name")
    assert r.stdout == b"web", r.stderr

"""The writer thread: batches written whole, a slow sink drops and counts, reopen."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pyvs.logs.sinks import PIPE_PIECE, FdSink, pieces
from pyvs.logs.writer import LogWriter


class BlockedSink:
    """A sink that does not return until released (a hung disk or syslog daemon)."""

    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got: list[bytes] = []

    def open(self) -> None: ...

    def write(self, data: bytes, nlines: int) -> int:
        self.entered.set()
        self.release.wait(10)
        self.got.append(data)
        return 0

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def _until(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_pieces_cut_only_at_line_ends() -> None:
    data = b"".join(b"%05d %s\n" % (i, b"x" * (i % 50)) for i in range(500))
    parts = pieces(data, 1000)
    assert b"".join(parts) == data
    assert all(p.endswith(b"\n") and len(p) <= 1000 for p in parts)
    long_line = b"y" * 3000 + b"\n"
    assert pieces(b"a\n" + long_line + b"b\n", 1000) == [b"a\n", long_line, b"b\n"]


def test_a_stuck_sink_makes_submit_drop_and_count_never_wait() -> None:
    sink = BlockedSink()
    w = LogWriter(sink, limit=10_000)
    w.start()
    w.submit(b"first\n", 1)
    assert sink.entered.wait(5)  # the thread is stuck in the sink now
    t0 = time.monotonic()
    for _ in range(100):
        w.submit(b"z" * 999 + b"\n", 1)  # 100 kB into a 10 kB queue
    assert time.monotonic() - t0 < 0.5  # the loop side never waited on the sink
    assert w.counts() == (0, 90)  # ten batches fit, ninety lines dropped
    sink.release.set()
    w.stop(5)
    assert w.counts() == (11, 90)
    assert sum(len(g) for g in sink.got) == 6 + 10 * 1000


def test_file_lines_arrive_in_order_and_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    w = LogWriter(FdSink(str(path)), limit=1 << 20)
    w.start()
    w.submit(b"one\ntwo\n", 2)
    _until(lambda: w.counts()[0] == 2)
    os.rename(path, tmp_path / "access.log.1")  # logrotate moves it away ...
    w.reopen()  # ... and signals
    _until(w.idle)
    w.submit(b"three\n", 1)
    w.stop(5)
    assert (tmp_path / "access.log.1").read_bytes() == b"one\ntwo\n"
    assert path.read_bytes() == b"three\n"
    assert w.counts() == (3, 0)


def test_a_pipe_gets_writes_no_longer_than_pipe_buf() -> None:
    r, wfd = os.pipe()
    sink = FdSink("stdout")
    sink.fd = wfd
    sink.piece = PIPE_PIECE  # what open() picks for a pipe
    data = b"".join(b"line %d %s\n" % (i, b"p" * 100) for i in range(200))
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(_read_all(r)))
    reader.start()
    assert sink.write(data, 200) == 0
    os.close(wfd)
    reader.join(5)
    assert bytes(got) == data
    assert all(len(p) <= PIPE_PIECE for p in pieces(data, PIPE_PIECE))


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return bytes(out)


def test_stdout_sink(capfd: object) -> None:
    sink = FdSink("stdout")
    sink.open()
    assert sink.write(b'{"a":1}\n{"b":2}\n', 2) == 0
    sink.close()  # never closes fd 1
    out, _ = capfd.readouterr()  # type: ignore[attr-defined]
    assert out == '{"a":1}\n{"b":2}\n'


def test_syslog_unix_socket_gets_one_rfc5424_message_per_line(tmp_path: Path) -> None:
    import re
    import socket

    from pyvs.logs.sinks import SyslogSink

    path = tmp_path / "log.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.settimeout(5)
    sink = SyslogSink(f"syslog://{path}", "daemon", "web")
    sink.open()
    assert sink.write(b"first line\nsecond line\n", 2) == 0
    got = [rx.recv(65536), rx.recv(65536)]
    for msg, text in zip(got, (b"first line", b"second line"), strict=True):
        m = re.fullmatch(rb"<30>1 \S+Z \S+ web (\d+) - - (.*)", msg)  # daemon(3) * 8 + info(6)
        assert m is not None and m[1] == str(os.getpid()).encode() and m[2] == text, msg
    rx.close()
    assert sink.write(b"nobody listens\n", 1) == 1  # the daemon is gone: counted, not raised
    sink.close()

"""Where access-log lines go: a file, stdout, or syslog (RFC 5424 over UDP or a unix socket).

A sink is used by one writer thread only (:mod:`pyvs.logs.writer`) and may block:
the event loop never calls it. ``write`` takes whole lines joined together and
returns how many of them could not be written, so the writer can count them.

Two workers writing one file must never interleave partial lines. Every write is a
whole number of lines: to a regular file opened with ``O_APPEND`` the kernel places
each ``write`` at the end in one piece (the inode lock is held for the whole write,
on local file systems); to a pipe only writes of at most ``PIPE_BUF`` bytes are atomic,
so lines are grouped into pieces no longer than that. A line longer than ``PIPE_BUF``
still goes out in one write (it may then interleave on a pipe, never on a file).
"""

from __future__ import annotations

import os
import select
import socket
import stat
import time
from typing import Protocol

from pyvs.config.log_schema import SYSLOG_FACILITIES, syslog_target

FILE_PIECE = 1 << 16  # bytes per write to a file
PIPE_PIECE = select.PIPE_BUF  # 4096 on Linux: the atomic write size of a pipe


class Sink(Protocol):
    name: str

    def open(self) -> None: ...
    def write(self, data: bytes, nlines: int) -> int: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


def pieces(data: bytes, limit: int) -> list[bytes]:
    """``data`` (lines ending in LF) cut at line ends into pieces of at most ``limit``
    bytes (a longer line is a piece of its own)."""
    if len(data) <= limit:
        return [data]
    out: list[bytes] = []
    start = 0
    n = len(data)
    while start < n:
        if n - start <= limit:
            out.append(data[start:])
            break
        cut = data.rfind(b"\n", start, start + limit)
        if cut < 0:
            cut = data.find(b"\n", start + limit)
            if cut < 0:
                cut = n - 1
        out.append(data[start : cut + 1])
        start = cut + 1
    return out


class FdSink:
    """Lines appended to a file descriptor: a file (reopened on demand) or stdout."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.path = path
        self.fd = -1
        self.piece = FILE_PIECE

    def open(self) -> None:
        if self.path == "stdout":
            self.fd = 1
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        mode = os.fstat(self.fd).st_mode
        self.piece = FILE_PIECE if stat.S_ISREG(mode) else PIPE_PIECE

    def write(self, data: bytes, nlines: int) -> int:
        lost = 0
        for piece in pieces(data, self.piece):
            try:
                done = os.write(self.fd, piece)
            except OSError:  # ENOSPC, EIO, a closed pipe: these lines are lost
                lost += piece.count(b"\n")
                continue
            if done < len(piece):  # a short write (disk full): the rest is not retried
                lost += piece.count(b"\n", done)
        return lost

    def reopen(self) -> None:
        """logrotate has moved the file away: continue in a new file at ``path``."""
        if self.path == "stdout":
            return
        old = self.fd
        self.open()
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1


def facility_code(name: str) -> int:
    """RFC 5424 facility number: kern 0 ... ftp 11; codes 12-15 have no name here; local0-7 are 16-23."""
    if name.startswith("local"):
        return 16 + int(name[5:])
    return SYSLOG_FACILITIES.index(name)


class SyslogSink:
    """RFC 5424 messages, one datagram per line, to a UDP address or a unix socket."""

    def __init__(self, path: str, facility: str, tag: str) -> None:
        self.name = path
        self.kind, self.target = syslog_target(path)  # ("unix", path) or ("udp", (host, port))
        self.pri = facility_code(facility) * 8 + 6  # severity 6: informational
        self.tag = tag
        self.sock: socket.socket | None = None
        self.host = (socket.gethostname() or "-").split(".")[0][:255] or "-"

    def open(self) -> None:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        else:
            assert isinstance(self.target, tuple)
            host, port = self.target
            family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        # A syslog daemon that stops reading must not hold the writer for ever.
        sock.settimeout(1.0)
        sock.connect(self.target)
        self.sock = sock

    def header(self) -> bytes:
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"
        return b"<%d>1 %s %s %s %d - - " % (self.pri, ts.encode(), self.host.encode(), self.tag.encode(), os.getpid())

    def write(self, data: bytes, nlines: int) -> int:
        sock = self.sock
        if sock is None:
            return nlines
        head = self.header()
        lost = 0
        for line in data.splitlines():
            try:
                sock.send(head + line)
            except OSError:  # refused (no daemon), full, timed out: counted as dropped
                lost += 1
        return lost

    def reopen(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def open_sink(path: str, facility: str = "local0", tag: str = "pyvs") -> Sink:
    """The sink for an ``access_log.path`` value (not opened yet)."""
    if path.startswith("syslog:"):
        return SyslogSink(path, facility, tag)
    return FdSink(path)

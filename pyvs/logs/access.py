"""Per-worker access logs and the end-of-request observer.

Theory of operation
-------------------
Every HTTP request ends in exactly one call of :meth:`Observer.ended` (made by the
client connection, :mod:`pyvs.l7.h1conn`, at the one place its exchange is over:
answered, refused, timed out, broken off). A listener with neither an access log nor
page-view statistics has no observer at all, and its requests pay one ``None`` test.

With a log, ``ended`` appends a tuple of the request's facts (:mod:`pyvs.logs.formats`)
to the listener's :class:`AccessLog`. The records are turned into lines when a batch
is flushed: after ``flush`` seconds, or at once when many are waiting; the lines go to
the sink's :class:`~pyvs.logs.writer.LogWriter` in one piece. Listeners writing to the
same place share one writer (one file descriptor, one thread) in a worker.

Who reopens on SIGUSR1: the supervisor receives the signal (logrotate's postrotate
``kill -USR1`` to the ``pyvs run`` process) and forwards it to every worker; each worker
flushes its waiting records and tells its writers, which reopen between two writes.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from pyvs.config.log_schema import AccessLogConfig
from pyvs.logs.formats import Clock, Record, make_format
from pyvs.logs.sinks import open_sink
from pyvs.logs.writer import LogWriter

if TYPE_CHECKING:
    from pyvs.config.schema import Config
    from pyvs.l7.exchange import Exchange
    from pyvs.logs.pageviews import PageViews

BATCH_RECORDS = 512  # this many waiting records are formatted and handed over at once


class AccessLog:
    """The access log of one listener in one worker."""

    __slots__ = ("clock", "flush_delay", "fmt", "handle", "listener", "loop", "records", "writer")

    def __init__(self, listener: str, cfg: AccessLogConfig, writer: LogWriter,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.listener = listener
        self.fmt = make_format(cfg.format, listener)
        self.writer = writer
        self.loop = loop
        self.flush_delay = cfg.flush
        self.records: list[Record] = []
        self.clock = Clock()
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def add(self, rec: Record) -> None:
        self.records.append(rec)
        self.added(len(self.records))

    def added(self, n: int) -> None:
        """``n`` records wait now (the observer appends them itself, and calls this for
        the first and for a full batch only)."""
        if n == BATCH_RECORDS:
            # Formatted on the next loop turn, not now: the response this record
            # describes may still be waiting in the write batch.
            if self.handle is not None:
                self.handle.cancel()
            self.handle = self.loop.call_soon(self.flush)
        elif n == 1:
            self.handle = self.loop.call_later(self.flush_delay, self.flush)

    def flush(self) -> None:
        """Format the waiting records and hand the lines to the writer."""
        records = self.records
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if not records:
            return
        self.records = []
        clock = self.clock
        clock.sync(self.loop.time())
        line = self.fmt.line
        self.writer.submit(b"".join([line(r, clock) for r in records]), len(records))


class Observer:
    """What happens when a request of one listener ends: its log line, its page view."""

    __slots__ = ("alog", "pv")

    def __init__(self, alog: AccessLog | None, pv: PageViews | None) -> None:
        self.alog = alog
        self.pv = pv

    def ended(self, ex: Exchange, status: int, now: float, dur: float, term: str) -> None:
        head = ex.head
        client = ex.view.client_ip if ex.trusted else ex.client_ip
        alog = self.alog
        if alog is not None:
            server = ex.last_server
            if server is None and (status == 502 or status == 504):
                server = ex.server  # a failed connect: the server tried last
            records = alog.records
            records.append((now, status, dur, client, head, ex.route, ex.backend, server, ex.attempts, ex.resp_bytes,
                            ex.resp_head, ex.rid, term, getattr(ex.down, "tls", None), ex.queue_wait,
                            ex.cache_status, ex.head_at - (ex.sent_at or ex.started) if ex.head_at else -1.0))
            n = len(records)
            if n == 1 or n >= BATCH_RECORDS:
                alog.added(n)
        pv = self.pv
        if pv is not None and head is not None:
            rt = ex.route
            pv.record(rt.vhost if rt is not None and rt.vhost else ex.lst.name, head, status, ex.resp_head, client)


class AccessLogs:
    """Every access log of one worker: writers by destination, logs by listener."""

    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.writers: dict[str, LogWriter] = {}
        self.logs: dict[str, AccessLog] = {}
        default = cfg.global_.access_log
        for lc in cfg.listeners:
            if lc.mode != "http":
                continue
            own = lc.access_log
            chosen = default if own is None else own
            if not isinstance(chosen, AccessLogConfig):
                continue  # none, or false / "off"
            writer = self.writers.get(chosen.path)
            if writer is None:
                writer = self.writers[chosen.path] = LogWriter(
                    open_sink(chosen.path, chosen.facility, chosen.tag), chosen.buffer)
            self.logs[lc.name] = AccessLog(lc.name, chosen, writer, loop)

    def start(self) -> None:
        """Open every destination; OSError names the one that failed."""
        for path, w in self.writers.items():
            try:
                w.start()
            except OSError as exc:
                raise OSError(exc.errno, f"access_log cannot open {path}: {exc.strerror or exc}") from None

    def reopen(self) -> None:
        for log in self.logs.values():
            log.flush()
        for w in self.writers.values():
            w.reopen()

    def flush(self) -> None:
        for log in self.logs.values():
            log.flush()

    def close(self, timeout: float = 2.0) -> None:
        """Flush, write what is queued (up to ``timeout`` s in all), close the sinks."""
        self.flush()
        deadline = time.monotonic() + timeout
        for w in self.writers.values():
            w.stop(max(0.0, deadline - time.monotonic()))

    def counts(self) -> tuple[int, int]:
        """Lines written and dropped by this worker, all destinations."""
        lines = dropped = 0
        for w in self.writers.values():
            a, b = w.counts()
            lines += a
            dropped += b
        return lines, dropped


def build(cfg: Config, loop: asyncio.AbstractEventLoop) -> tuple[AccessLogs, PageViews | None, dict[str, Observer]]:
    """A worker's access logs, page-view counter and the observer of each HTTP listener
    that has either (listeners without are absent: their requests pay one ``None`` test)."""
    from pyvs.logs.pageviews import PageViews

    logs = AccessLogs(cfg, loop)
    pvc = cfg.pageviews
    pv = PageViews(pvc) if pvc is not None and pvc.enabled else None
    observers = {
        lc.name: Observer(logs.logs.get(lc.name), pv)
        for lc in cfg.listeners
        if lc.mode == "http" and (lc.name in logs.logs or pv is not None)
    }
    return logs, pv, observers


def forward_reopen(pids: list[int]) -> None:
    """Supervisor, on SIGUSR1: every worker reopens its log files (logrotate)."""
    import os
    import signal

    for pid in pids:
        if pid:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass  # exited meanwhile

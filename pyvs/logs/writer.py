"""The writer thread of one sink: the event loop hands over batches, never waits.

Theory of operation
-------------------
The loop formats a batch of lines and calls :meth:`LogWriter.submit`, which only
appends the bytes to a queue under a lock and wakes the thread: no system call, no
wait. The thread takes everything queued and writes it to the sink (a blocking
``write``/``send``, with the GIL released). When the sink is slow or the disk is full,
the queue grows; once it holds ``limit`` bytes, new batches are dropped on the spot and
their lines counted (``dropped``), so a request is never slowed by its log line.

A reopen (SIGUSR1, logrotate) is a flag the thread acts on between two writes: the
lines queued before it go to the old file, those after it to the new one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from pyvs.logs.sinks import Sink

log = logging.getLogger("pyvs.logs")


class LogWriter:
    """A bounded queue of line batches and the thread that writes them to ``sink``."""

    def __init__(self, sink: Sink, limit: int) -> None:
        self.sink = sink
        self.limit = limit
        self.cond = threading.Condition()
        self.queue: deque[tuple[bytes, int]] = deque()
        self.queued = 0  # bytes in the queue
        self.lines = 0  # written
        self.dropped = 0  # dropped: queue full, or the sink failed
        self.stopping = False
        self.reopening = False
        self.busy = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the sink (OSError: the reason the worker cannot start) and the thread."""
        self.sink.open()
        self.thread = threading.Thread(target=self._run, name=f"access-log {self.sink.name}", daemon=True)
        self.thread.start()

    def submit(self, data: bytes, nlines: int) -> None:
        """From the event loop: queue ``data`` (``nlines`` whole lines) or drop it."""
        with self.cond:
            if self.queued + len(data) > self.limit or self.stopping:
                self.dropped += nlines
                return
            self.queue.append((data, nlines))
            self.queued += len(data)
            self.cond.notify()

    def reopen(self) -> None:
        with self.cond:
            self.reopening = True
            self.cond.notify()

    def counts(self) -> tuple[int, int]:
        with self.cond:
            return self.lines, self.dropped

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self.busy and not self.reopening

    def stop(self, timeout: float) -> None:
        """Write what is queued (for up to ``timeout`` s), then close the sink."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        sink = self.sink
        while True:
            with self.cond:
                while not self.queue and not self.reopening and not self.stopping:
                    self.cond.wait()
                batch = list(self.queue)
                self.queue.clear()
                self.queued = 0
                reopen, self.reopening = self.reopening, False
                stop = self.stopping
                self.busy = bool(batch) or reopen
            written = lost = 0
            if batch:
                data = b"".join(d for d, _ in batch)
                n = sum(k for _, k in batch)
                try:
                    lost = sink.write(data, n)
                except Exception:  # a sink must not kill the thread: the lines are lost
                    log.exception("access log %s: write failed", sink.name)
                    lost = n
                written = n - lost
            if reopen:
                try:
                    sink.reopen()
                except OSError as exc:
                    log.error("access log %s: cannot reopen: %s", sink.name, exc.strerror or exc)
            with self.cond:
                self.lines += written
                self.dropped += lost
                self.busy = False
            if stop and not self.queue:
                sink.close()
                return

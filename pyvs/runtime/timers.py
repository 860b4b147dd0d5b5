"""A coarse deadline sweeper: timeouts without a timer object per request.

Creating and cancelling an event-loop timer per request costs about as much as a
tenth of the whole per-request budget (../shared/PERFORMANCE.md). Instead each
connection keeps a plain ``deadline`` float (0 = none) that it rewrites as its
state changes, and one periodic tick per worker calls ``on_deadline(now)`` on the
connections whose deadline has passed. Timeouts therefore fire up to one tick late
(``resolution``, 50 ms by default), which is well inside what any timeout here means.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("pyvs.timers")


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class Sweeper:
    """Calls ``on_deadline`` on registered objects whose ``deadline`` has passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.05) -> None:
        self.loop = loop
        self.resolution = resolution
        self.members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.resolution, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, member: HasDeadline) -> None:
        self.members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self.members.discard(member)

    def _tick(self) -> None:
        # Rescheduled first: a failing callback must not leave the worker without timeouts.
        self._handle = self.loop.call_later(self.resolution, self._tick)
        now = self.loop.time()
        due = [m for m in self.members if 0.0 < m.deadline <= now]
        for m in due:
            if 0.0 < m.deadline <= now:  # an earlier callback may have moved it
                m.deadline = 0.0
                try:
                    m.on_deadline(now)
                except Exception:
                    log.exception("timeout handling failed")

"""The HTTP queue: requests waiting while the servers they may use are at their
``maxconn`` (HAProxy's server and backend queues), one queue for the instance.

Theory of operation
-------------------
A server's ``maxconn`` is enforced on its instance-wide count
(:meth:`ServerState.try_take`: one atomic add, undone when it went over), so the
server never has more requests in flight than its limit, whatever worker sends
them. A request that finds no room waits here:

* **backend queue** (no persistence, or its server gone): the request draws a
  *ticket* from the backend's shared tail counter and is served when the shared
  head reaches its ticket *and* some server has room; the head then moves on by one.
  So requests leave in arrival order across all workers (the ticket is the order).
  A ticket whose request gave up (queue timeout, client gone) is marked in a shared
  ring (``ring[t % R] = t + 1``) and any worker moving the head skips it.
* **server queue** (a sticky request whose server is full): it waits for that
  server only, in arrival order within the worker, without a ticket, so it never
  holds up requests that could go elsewhere.

Wake-ups: a worker whose own request ends polls its queue at once; a worker with
requests waiting also polls every ``POLL`` seconds, which is how a slot freed in
another worker reaches it (at most ``POLL`` late). Nothing runs while the queue is
empty, and a backend without any ``maxconn`` has no queue at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Protocol

from pyvs.balance.base import PickContext
from pyvs.shared.state import B_HEAD, B_QUEUED, B_TAIL

if TYPE_CHECKING:
    from pyvs.config.limits_schema import HttpQueue
    from pyvs.shared.state import SharedState
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.queue")

POLL = 0.002  # seconds between looks at the shared head while requests wait here


class Queued(Protocol):
    """What the queue knows of a waiting exchange (pyvs/l7/upstream_leg.py)."""

    def dequeued(self, server: ServerState, waited: float) -> None: ...
    def queue_failed(self, status: int) -> None: ...


class Waiter:
    __slots__ = ("deadline", "ex", "server", "since", "ticket")

    def __init__(self, ex: Queued, ticket: int, server: ServerState | None, since: float, deadline: float) -> None:
        self.ex = ex
        self.ticket = ticket
        self.server = server
        self.since = since
        self.deadline = deadline


class BackendQueue:
    """One backend's queue, as one worker sees it (the order is shared)."""

    def __init__(self, backend: BackendRuntime, loop: asyncio.AbstractEventLoop, cfg: HttpQueue,
                 state: SharedState) -> None:
        self.backend = backend
        self.loop = loop
        self.size = cfg.size
        self.timeout = cfg.timeout
        self.words = state.words
        base = state.backends[backend.name]
        self.tail = base + B_TAIL
        self.head = base + B_HEAD
        self.queued = base + B_QUEUED
        self.ring, self.ring_size = state.rings[backend.name]
        self.waiting: deque[Waiter] = deque()  # ticketed, in ticket order
        self.pinned: deque[Waiter] = deque()  # sticky requests waiting for their server
        self._timer: asyncio.TimerHandle | None = None
        self.dequeued = 0
        self.wait_total = 0.0
        self.timeouts = 0
        self.full = 0

    # ------------------------------------------------------------ admission
    def pending(self) -> bool:
        """Does anyone (any worker) wait in the backend queue? Then a new request
        queues behind them even if a slot is free: the slot is theirs."""
        w = self.words
        return w.get(self.tail) != w.get(self.head)

    def room(self, exclude: frozenset[int]) -> ServerState | None:
        """A usable server below its maxconn, its slot taken; None when all are full."""
        backend = self.backend
        ex = exclude
        for _ in range(len(backend.servers) + 1):
            server = backend.pick(PickContext(exclude=ex) if ex else None)
            if server is None:
                return None
            if server.try_take():
                return server
            if server.index in ex:  # the scheduler fell back to an excluded one: all are full
                return None
            ex = ex | server.index_set
        return None

    def join(self, ex: Queued) -> bool:
        """Queue ``ex`` for any server; False when the queue is full (answer 503)."""
        w = self.words
        # Checked before drawing (a drawn ticket must be waited for or abandoned): two
        # workers joining at once may pass the size by one each, never more, and the
        # ring (2 x (size + workers)) never gives two waiting tickets one slot.
        if self.size == 0 or w.get(self.tail) - w.get(self.head) >= self.size:
            self.full += 1
            return False
        t = w.add(self.tail, 1) - 1
        self._add(Waiter(ex, t, None, *self._times()), self.waiting)
        return True

    def join_pinned(self, ex: Queued, server: ServerState) -> bool:
        """Queue a sticky request for ``server``; False when the queue is full."""
        if self.size == 0 or len(self.pinned) >= self.size:
            self.full += 1
            return False
        self._add(Waiter(ex, -1, server, *self._times()), self.pinned)
        return True

    def leave(self, ex: Queued) -> None:
        """``ex`` no longer waits (its client went away)."""
        for q in (self.waiting, self.pinned):
            for wt in q:
                if wt.ex is ex:
                    q.remove(wt)
                    self._gone(wt)
                    return

    # --------------------------------------------------------------- serving
    def poll(self) -> None:
        """Serve whoever can go now; expire whoever waited too long."""
        self._timer = None
        now = self.loop.time()
        for wt in list(self.pinned):
            assert wt.server is not None
            if wt.server.target.eligible and wt.server.try_take():
                self.pinned.remove(wt)
                self._served(wt, wt.server, now)
        w = self.words
        while True:
            h = self._skip_abandoned()
            if not self.waiting or self.waiting[0].ticket != h:
                break
            server = self.room(frozenset())
            if server is None:
                break
            wt = self.waiting.popleft()
            w.cas(self.head, h, h + 1)
            self._served(wt, server, now)
        for q in (self.waiting, self.pinned):
            while q and q[0].deadline <= now:  # one timeout for all: the oldest expires first
                wt = q.popleft()
                self._gone(wt)
                self.timeouts += 1
                wt.ex.queue_failed(503)
        self._arm()

    def kick(self) -> None:
        """A slot of this backend was freed here: look at the queue soon."""
        if (self.waiting or self.pinned) and self._timer is None:
            self._timer = self.loop.call_soon(self.poll)  # type: ignore[assignment]

    # ------------------------------------------------------------- internals
    def _times(self) -> tuple[float, float]:
        now = self.loop.time()
        return now, now + self.timeout

    def _add(self, wt: Waiter, q: deque[Waiter]) -> None:
        q.append(wt)
        self.words.add(self.queued, 1)
        self._arm()

    def _arm(self) -> None:
        if (self.waiting or self.pinned) and self._timer is None:
            self._timer = self.loop.call_later(POLL, self.poll)

    def _served(self, wt: Waiter, server: ServerState, now: float) -> None:
        self.words.add(self.queued, -1)
        self.dequeued += 1
        waited = now - wt.since
        self.wait_total += waited
        wt.ex.dequeued(server, waited)

    def _gone(self, wt: Waiter) -> None:
        self.words.add(self.queued, -1)
        if wt.ticket >= 0:
            self._abandon(wt.ticket)

    def _abandon(self, t: int) -> None:
        self.words.set(self.ring + t % self.ring_size, t + 1)
        self._skip_abandoned()

    def _skip_abandoned(self) -> int:
        """Move the shared head past tickets nobody waits for; the head."""
        w = self.words
        while True:
            h = w.get(self.head)
            if h >= w.get(self.tail) or w.get(self.ring + h % self.ring_size) != h + 1:
                return h
            w.cas(self.head, h, h + 1)

    def statistics(self) -> dict[str, float | int]:
        return {"dequeued": self.dequeued, "wait_seconds_total": round(self.wait_total, 6),
                "timeouts": self.timeouts, "full": self.full, "waiting_here": len(self.waiting) + len(self.pinned)}

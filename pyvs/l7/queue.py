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
  ring (``ring[t % R] = t + 1``) and any worker moving the head skips it; a waiting
  ticket's slot holds ``-deadline`` (microseconds), so a ticket still "waiting" past its
  deadline is known to belong to a worker that died, and is skipped too.
* **server queue** (a sticky request whose server is full): it waits for that
  server only, in arrival order within the worker, without a ticket, so it never
  holds up requests that could go elsewhere.

Wake-ups: a worker whose own request ends polls its queue at once; a worker with
requests waiting also polls every ``POLL`` seconds, which is how a slot freed in
another worker reaches it (at most ``POLL`` late). Nothing runs while the queue is
empty, and a backend without any ``maxconn`` has no queue at all.

A worker that dies holding the head ticket cannot give it up; the others skip it once
its deadline has passed (+50 ms), and, should the worker have died between drawing the
ticket and marking it, once it stayed the head longer than ``timeout`` (+1 s). A live
owner never lets either happen (its request is served, or times out and abandons the
ticket). A sticky
request whose server goes down leaves the server queue and is balanced afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pyvs.balance.base import PickContext
from pyvs.shared.state import B_HEAD, B_QUEUED, B_TAIL, usec

if TYPE_CHECKING:
    from pyvs.config.limits_schema import HttpQueue
    from pyvs.shared.state import SharedState
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.queue")

POLL = 0.002  # seconds between looks at the shared head while requests wait here
STALL_MARGIN = 1.0  # a head ticket with no deadline mark, older than timeout + this, has no live owner
SKIP_MARGIN = 50_000  # microseconds past its deadline before a waiting ticket is taken as dead


class Queued(Protocol):
    """What the queue knows of a waiting exchange (pyvs/l7/upstream_leg.py)."""

    def dequeued(self, server: ServerState, waited: float) -> None: ...
    def queue_failed(self, status: int) -> None: ...
    def requeue_elsewhere(self, server: ServerState) -> None: ...


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
        self._stall: tuple[int, float] | None = None  # (head ticket, since) of another worker's head
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
        since, deadline = self._times()
        w.set(self.ring + t % self.ring_size, -usec(deadline))  # waiting until then (see _skip_abandoned)
        self._add(Waiter(ex, t, None, since, deadline), self.waiting)
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
        try:
            self._poll(self.loop.time())
        finally:
            self._arm()  # whatever a callback raised, the queue is looked at again

    def _poll(self, now: float) -> None:
        for wt in list(self.pinned):
            server = wt.server
            assert server is not None
            if not server.target.eligible:  # its server went down: balanced afresh, as a redispatch
                self.pinned.remove(wt)
                self.words.add(self.queued, -1)
                self._call(wt.ex.requeue_elsewhere, server)
            elif server.try_take():
                self.pinned.remove(wt)
                self._served(wt, server, now)
        w = self.words
        while True:
            h = self._skip_abandoned()
            if h >= w.get(self.tail):
                self._stall = None
                break
            if not self.waiting or self.waiting[0].ticket != h:
                self._unstick(h, now)
                break
            server = self.room(frozenset())
            if server is None:
                break
            wt = self.waiting.popleft()
            w.set(self.ring + h % self.ring_size, 0)
            w.cas(self.head, h, h + 1)
            self._served(wt, server, now)
        for q in (self.waiting, self.pinned):
            while q and q[0].deadline <= now:  # one timeout for all: the oldest expires first
                wt = q.popleft()
                self._gone(wt)
                self.timeouts += 1
                self._call(wt.ex.queue_failed, 503)

    def _unstick(self, h: int, now: float) -> None:
        """The head ticket is another worker's. A live owner serves it or gives it up
        within ``timeout``; one still at the head well after that belongs to a worker
        that died (or was killed between drawing it and waiting): skip it."""
        if self._stall is None or self._stall[0] != h:
            self._stall = (h, now)
        elif now - self._stall[1] > self.timeout + STALL_MARGIN:
            log.warning("queue of backend %s: ticket %d held by no live worker; skipped", self.backend.name, h)
            self.words.cas(self.head, h, h + 1)
            self._stall = None

    def kick(self) -> None:
        """A slot of this backend was freed here: look at the queue now (not at the
        next poll tick)."""
        if self.waiting or self.pinned:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_soon(self.poll)  # type: ignore[assignment]

    def has_pinned(self, server: ServerState) -> bool:
        """Do sticky requests of this worker wait for ``server``? (A new one queues
        behind them instead of taking a freed slot first.)"""
        return any(wt.server is server for wt in self.pinned)

    def _call(self, fn: Callable[..., None], arg: object) -> None:
        try:
            fn(arg)
        except Exception:  # one exchange's failure must not stop the queue
            log.exception("queue of backend %s: a waiting request failed", self.backend.name)

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
        try:
            wt.ex.dequeued(server, waited)
        except Exception:
            log.exception("queue of backend %s: a dequeued request failed", self.backend.name)

    def _gone(self, wt: Waiter) -> None:
        self.words.add(self.queued, -1)
        if wt.ticket >= 0:
            self._abandon(wt.ticket)

    def _abandon(self, t: int) -> None:
        self.words.set(self.ring + t % self.ring_size, t + 1)
        self._skip_abandoned()

    def _skip_abandoned(self) -> int:
        """Move the shared head past tickets nobody waits for; the head. A ticket is
        skipped when its owner gave it up (``t + 1`` in its ring slot) or when it is
        still marked waiting (``-deadline``) after its deadline: a live owner gives it up
        at its deadline, so that owner is dead (and had its waiter failed anyway)."""
        w = self.words
        now = usec(self.loop.time()) - SKIP_MARGIN
        while True:
            h = w.get(self.head)
            if h >= w.get(self.tail):
                return h
            v = w.get(self.ring + h % self.ring_size)
            if v != h + 1 and not (v < 0 and -v < now):
                return h
            w.cas(self.head, h, h + 1)

    def statistics(self) -> dict[str, float | int]:
        return {"dequeued": self.dequeued, "wait_seconds_total": round(self.wait_total, 6),
                "timeouts": self.timeouts, "full": self.full, "waiting_here": len(self.waiting) + len(self.pinned)}

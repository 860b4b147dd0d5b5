"""The HTTP queue (pyvs/l7/queue.py) as two workers share it, in one process: two
BackendQueues over one SharedState, a real event loop run for short spans."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyvs.config.loader import load_text
from pyvs.l7 import queue as queue_mod
from pyvs.l7.queue import BackendQueue
from pyvs.shared.state import SharedState
from pyvs.upstream.server import BackendRuntime, ServerState

CFG = """
backends: [{name: b, queue: {timeout: %s}, servers: [{name: s, address: "127.0.0.1:1", maxconn: 1}]}]
"""


class Ex:
    """A waiting exchange that records what the queue did with it."""

    def __init__(self, log: list[Any], name: str) -> None:
        self.log = log
        self.name = name

    def dequeued(self, server: ServerState, waited: float) -> None:
        self.log.append(("served", self.name))

    def queue_failed(self, status: int) -> None:
        self.log.append(("failed", self.name, status))

    def requeue_elsewhere(self, server: ServerState) -> None:
        self.log.append(("elsewhere", self.name))


def workers(timeout: str) -> tuple[asyncio.AbstractEventLoop, list[BackendRuntime], list[BackendQueue]]:
    cfg = load_text(CFG % timeout)
    state = SharedState(cfg, 2)
    loop = asyncio.new_event_loop()
    runtimes, queues = [], []
    for owner in (0, 1):
        state.owner = owner
        b = BackendRuntime(cfg.backends[0])
        b.attach_shared(state)
        runtimes.append(b)
        queues.append(BackendQueue(b, loop, cfg.backends[0].queue, state))
    return loop, runtimes, queues


def run(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def test_waiters_leave_in_ticket_order_across_workers() -> None:
    loop, (a, b), (qa, qb) = workers("5s")
    log: list[Any] = []
    sa, sb = a.servers[0], b.servers[0]
    assert sa.try_take()  # worker A's request holds the only slot
    assert not sb.try_take()
    assert qb.join(Ex(log, "b1")) and qa.join(Ex(log, "a2")) and qb.join(Ex(log, "b3"))
    # Each release frees the slot in whatever worker held it; the queue hands it to
    # the oldest ticket, whichever worker drew it.
    for holder, served in ((sa, ["b1"]), (sb, ["b1", "a2"]), (sa, ["b1", "a2", "b3"])):
        holder.give()
        run(loop, 0.02)
        assert [x[1] for x in log] == served
    loop.close()


def test_a_dead_workers_head_ticket_is_skipped_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A draws the head ticket and dies (its queue object is simply dropped);
    B's waiter, behind it, is served once A's deadline has passed, before its own."""
    loop, (a, _), (qa, qb) = workers("300ms")
    log: list[Any] = []
    assert a.servers[0].try_take()
    assert qa.join(Ex(log, "a-dead"))
    qa.waiting.clear()  # A is gone: nobody will serve or abandon its ticket
    qa._timer.cancel()  # type: ignore[union-attr]
    run(loop, 0.1)
    assert qb.join(Ex(log, "b"))
    a.servers[0].give()  # the slot is free, but the head ticket is A's
    run(loop, 0.1)
    assert log == []  # A's deadline (0.3 s) has not passed: B waits its turn
    run(loop, 0.3)
    assert log == [("served", "b")]
    loop.close()


def test_a_sticky_waiter_whose_server_goes_down_is_balanced_again() -> None:
    loop, (a, _), (qa, _) = workers("5s")
    log: list[Any] = []
    s = a.servers[0]
    assert s.try_take()
    assert qa.join_pinned(Ex(log, "p"), s)
    a.apply(False, s.target.weight, s)  # health: DOWN
    run(loop, 0.02)
    assert log == [("elsewhere", "p")]
    assert queue_mod.BackendQueue.statistics(qa)["waiting_here"] == 0
    loop.close()

"""WriteBatch: writes leave in order, once per loop iteration, and a transport that
closed meanwhile is skipped without losing the writes to the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyvs.runtime.batch import WriteBatch


class FakeLoop:
    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)

    def run_ready(self) -> None:
        ready, self.scheduled = self.scheduled, []
        for cb in ready:
            cb()


class FakeTransport:
    def __init__(self, log: list[tuple[str, bytes]], name: str, *, closed: bool = False) -> None:
        self.log = log
        self.name = name
        self.closed = closed

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("the handler is closed")
        self.log.append((self.name, data))


def _batch() -> tuple[WriteBatch, FakeLoop]:
    loop = FakeLoop()
    return WriteBatch(loop), loop  # type: ignore[arg-type]


def test_writes_wait_for_the_end_of_the_iteration_and_keep_their_order() -> None:
    batch, loop = _batch()
    log: list[tuple[str, bytes]] = []
    a, b = FakeTransport(log, "a"), FakeTransport(log, "b")
    batch.write(a, b"1")  # type: ignore[arg-type]
    batch.write(b, b"2")  # type: ignore[arg-type]
    batch.write(a, b"3")  # type: ignore[arg-type]
    assert log == [] and len(loop.scheduled) == 1  # one callback per iteration, not per write
    loop.run_ready()
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert batch.pending == []


def test_early_flush_then_the_scheduled_one_is_a_no_op() -> None:
    batch, loop = _batch()
    log: list[tuple[str, bytes]] = []
    a = FakeTransport(log, "a")
    batch.write(a, b"1")  # type: ignore[arg-type]
    batch.flush()  # e.g. before a direct write or a close on that connection
    assert log == [("a", b"1")]
    loop.run_ready()
    assert log == [("a", b"1")]
    batch.write(a, b"2")  # type: ignore[arg-type]
    assert len(loop.scheduled) == 1  # a new iteration schedules again
    loop.run_ready()
    assert log == [("a", b"1"), ("a", b"2")]


def test_a_closed_transport_does_not_stop_the_others() -> None:
    batch, loop = _batch()
    log: list[tuple[str, bytes]] = []
    gone: Any = FakeTransport(log, "gone", closed=True)
    live: Any = FakeTransport(log, "live")
    batch.write(gone, b"x")
    batch.write(live, b"y")
    loop.run_ready()
    assert log == [("live", b"y")]

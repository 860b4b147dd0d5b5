"""Slow start ramps, as a pure function and as a timer-driven helper."""

from __future__ import annotations

import pytest

from pyvs.balance.base import PickContext, Target, create
from pyvs.balance.slowstart import SlowStart, slowstart_weight


@pytest.mark.parametrize(
    ("now", "expected"),
    [(-1.0, 1), (0.0, 1), (1.4, 1), (1.5, 5), (15.0, 50), (29.9, 95), (30.0, 100), (99.0, 100)],
)
def test_weight_ramps_in_steps(now: float, expected: int) -> None:
    assert slowstart_weight(100, now, since=0.0, duration=30.0) == expected


def test_disabled_and_drained() -> None:
    assert slowstart_weight(10, 0.0, 0.0, 0.0) == 10
    assert slowstart_weight(0, 5.0, 0.0, 30.0) == 0


def test_ramp_helper_drives_weight_changed() -> None:
    ts = [Target(0, "old", 16), Target(1, "new", 16)]
    sched = create("roundrobin", ts)
    ramp = SlowStart(duration=10.0, steps=4)
    sched.server_down(ts[1])
    assert ramp.next_deadline() is None
    sched.server_up(ts[1])
    sched.weight_changed(ts[1], ramp.start(ts[1], 16, now=100.0))
    assert ts[1].weight == 1 and ramp.ramping(ts[1])
    seen = []
    now = 100.0
    while (deadline := ramp.next_deadline()) is not None:
        now = deadline
        for target, weight in ramp.on_timer(now):
            sched.weight_changed(target, weight)
            seen.append((now, weight))
    assert seen == [(102.5, 4), (105.0, 8), (107.5, 12), (110.0, 16)]
    assert not ramp.ramping(ts[1])
    assert sched.pick(PickContext()) is not None


def test_ramp_cancel_and_retarget() -> None:
    t = Target(0, "s", 8)
    ramp = SlowStart(duration=8.0, steps=8)
    ramp.start(t, 8, now=0.0)
    assert ramp.on_timer(1.0) == [(t, 1)]
    assert ramp.on_timer(2.0) == [(t, 2)]
    assert ramp.retarget(t, 16, now=2.0) == 4
    ramp.cancel(t)
    assert ramp.next_deadline() is None
    assert ramp.retarget(t, 16, now=3.0) is None


def test_late_timer_jumps_ahead_and_never_refires() -> None:
    t = Target(0, "s", 10)
    ramp = SlowStart(duration=10.0, steps=10)
    ramp.start(t, 10, now=0.0)
    assert ramp.on_timer(5.5) == [(t, 5)]
    assert ramp.on_timer(5.5) == []
    assert ramp.next_deadline() == pytest.approx(6.0)

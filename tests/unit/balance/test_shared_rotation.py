"""Round robin drawing from a position shared by several workers (Scheduler.share_sequence)."""

from __future__ import annotations

import itertools
from collections import Counter

from pyvs.balance.base import PickContext, Target, create
from pyvs.balance.roundrobin import SHARED_CYCLE_MAX, interleaved_cycle


def targets(*weights: int) -> list[Target]:
    return [Target(index=i, name=f"s{i}", weight=w) for i, w in enumerate(weights)]


def test_two_schedulers_sharing_a_position_walk_one_cycle() -> None:
    """Two workers' schedulers, picks interleaved in any order: together they produce
    the single-scheduler smooth order (5,1,1 -> a a b a c a a)."""
    position = itertools.count()
    workers = [create("roundrobin", targets(5, 1, 1)) for _ in range(2)]
    for w in workers:
        w.share_sequence(lambda: next(position))
    alone = create("roundrobin", targets(5, 1, 1))
    expected = [alone.pick(PickContext()).name for _ in range(21)]  # type: ignore[union-attr]
    got = [workers[i % 3 % 2].pick(PickContext()).name for i in range(21)]  # type: ignore[union-attr]
    assert got == expected
    assert Counter(got) == {"s0": 15, "s1": 3, "s2": 3}


def test_excluded_target_is_skipped_and_one_server_draws_nothing() -> None:
    position = itertools.count()
    sched = create("roundrobin", targets(1, 1, 1))
    sched.share_sequence(lambda: next(position))
    assert [sched.pick(PickContext(exclude=frozenset({1}))).name for _ in range(4)] == \
        ["s0", "s2", "s2", "s0"]  # type: ignore[union-attr]
    draws = []
    single = create("roundrobin", targets(3))
    single.share_sequence(lambda: draws.append(1) or 0)  # type: ignore[func-returns-value]
    assert single.pick(PickContext()).name == "s0"  # type: ignore[union-attr]
    assert draws == []


def test_cycle_is_bounded_when_weights_have_no_common_divisor() -> None:
    """Slow start ramps weights in steps whose gcd is 1: 20 servers at 256 and one at
    37 would make a 5,157-long exact cycle (and 78,000 with more servers)."""
    pool = targets(*([256 * 16] * 20), 37 * 16 + 1)
    cycle = interleaved_cycle(pool, SHARED_CYCLE_MAX)
    assert len(cycle) <= SHARED_CYCLE_MAX + len(pool)
    counts = Counter(t.index for t in cycle)
    assert set(counts) == set(range(21))  # everyone keeps at least one place
    assert max(counts[i] for i in range(20)) - min(counts[i] for i in range(20)) <= 1
    assert counts[20] < counts[0] / 4

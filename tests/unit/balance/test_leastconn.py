"""Connection-count algorithms and p2c follow outstanding counts."""

from __future__ import annotations

from collections import Counter

import pytest

from pyvs.balance.base import PickContext, Scheduler, Target, create

CTX = PickContext()


def setup(spec: str, weights: tuple[int, ...], outstanding: tuple[int, ...]) -> tuple[Scheduler, list[Target]]:
    ts = [Target(i, f"s{i}", w) for i, w in enumerate(weights)]
    s = create(spec, ts, seed=3)
    for t, o in zip(ts, outstanding, strict=True):
        for _ in range(o):
            s.taken(t)
    return s, ts


def pick_index(s: Scheduler) -> int:
    t = s.pick(CTX)
    assert t is not None
    return t.index


@pytest.mark.parametrize(
    ("spec", "weights", "outstanding", "expected"),
    [
        ("leastconn", (1, 1, 1), (3, 1, 2), 1),
        ("leastconn", (9, 1, 1), (3, 1, 2), 1),  # weights ignored
        ("weighted-leastconn", (4, 1, 1), (3, 1, 2), 0),  # 3/4 < 1/1 < 2/1
        ("weighted-leastconn", (1, 1, 1), (0, 1, 5), 0),
        ("sed", (4, 1, 1), (3, 0, 2), 1),  # (3+1)/4 = 1 > (0+1)/1? tie -> idle server
        ("sed", (4, 1, 1), (2, 0, 2), 0),  # 3/4 < 1/1
        ("nq", (4, 1, 1), (2, 0, 2), 1),  # never queue: the idle server first
        ("nq", (4, 1, 2), (2, 1, 1), 0),  # nobody idle: sed, 3/4 < 2/2 = 2/1
    ],
)
def test_picks_the_lowest_score(
    spec: str, weights: tuple[int, ...], outstanding: tuple[int, ...], expected: int
) -> None:
    s, _ = setup(spec, weights, outstanding)
    if spec == "sed" and outstanding == (3, 0, 2):
        # (3+1)/4 == (0+1)/1: a tie, broken by rotation between the two.
        assert {pick_index(s) for _ in range(4)} == {0, 1}
    else:
        assert all(pick_index(s) == expected for _ in range(5))


def test_leastconn_follows_taken_and_released() -> None:
    s, _ = setup("leastconn", (1, 1), (0, 0))
    a = s.pick(CTX)
    assert a is not None
    s.taken(a)
    b = s.pick(CTX)
    assert b is not None and b is not a
    s.taken(b)
    s.taken(b)
    assert s.pick(CTX) is a
    s.released(b)
    s.released(b)
    s.taken(a)
    assert s.pick(CTX) is b


def test_leastconn_rotates_among_ties() -> None:
    s, _ = setup("leastconn", (1, 1, 1), (0, 0, 0))
    assert Counter(pick_index(s) for _ in range(300)) == {0: 100, 1: 100, 2: 100}


def test_p2c_never_picks_the_single_most_loaded_server() -> None:
    # Two distinct draws: the most loaded server always loses its comparison.
    s, _ = setup("p2c", (1, 1, 1, 1), (50, 0, 1, 2))
    counts = Counter(pick_index(s) for _ in range(3000))
    assert counts[0] == 0
    assert counts[1] > counts[2] > counts[3]


def test_p2c_prefers_less_outstanding_statistically() -> None:
    s, ts = setup("p2c", (1,) * 5, (0,) * 5)
    counts: Counter[int] = Counter()
    for _ in range(5000):
        t = s.pick(CTX)
        assert t is not None
        s.taken(t)
        counts[t.index] += 1
    # Power of two choices keeps the spread of outstanding counts to a handful, where
    # one random choice would spread them by about sqrt(5000 / 5) * 2 = 60.
    assert max(t.outstanding for t in ts) - min(t.outstanding for t in ts) <= 6


def test_p2c_with_exclude_uses_only_the_rest() -> None:
    s, _ = setup("p2c", (1, 1, 1), (0, 5, 0))
    picks = {pick_index_ctx(s, frozenset({0})) for _ in range(50)}
    assert picks == {2}


def pick_index_ctx(s: Scheduler, exclude: frozenset[int]) -> int:
    t = s.pick(PickContext(exclude=exclude))
    assert t is not None
    return t.index


def test_first_fills_servers_in_order_up_to_maxconn() -> None:
    ts = [Target(i, f"s{i}", 1, maxconn=2) for i in range(3)]
    s = create("first", ts)
    order = []
    for _ in range(6):
        t = s.pick(CTX)
        assert t is not None
        s.taken(t)
        order.append(t.index)
    assert order == [0, 0, 1, 1, 2, 2]
    # Everything full: the least loaded relative to its maxconn, never None.
    s.released(ts[1])
    assert s.pick(CTX) is ts[1]
    s.taken(ts[1])
    assert s.pick(CTX) in ts
    # A freed slot on the first server is used first again.
    s.released(ts[0])
    assert s.pick(CTX) is ts[0]


def test_first_skips_down_servers() -> None:
    ts = [Target(i, f"s{i}", 1, maxconn=1) for i in range(3)]
    s = create("first", ts)
    s.server_down(ts[0])
    assert s.pick(CTX) is ts[1]

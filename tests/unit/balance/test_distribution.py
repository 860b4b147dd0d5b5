"""Distributions over many picks match the weights, within a stated tolerance (seeded).

Three regimes, because algorithms differ in what "matching the weights" means:

* stateless picks (round robin, random, hashing): each pick is released at once;
* connection-count algorithms: a closed loop with constant service time, where a
  server's share of throughput follows its share of outstanding requests;
* idle pools for p2c, whose two weighted draws must then follow the weights.
"""

from __future__ import annotations

import heapq
from collections import Counter

import pytest

from pyvs.balance.base import PickContext, Scheduler, Target, create
from pyvs.balance.capacity import Capacity

WEIGHTS = (5, 1, 1, 3)
SHARES = [w / sum(WEIGHTS) for w in WEIGHTS]


def targets(weights: tuple[int, ...] = WEIGHTS) -> list[Target]:
    return [Target(i, f"s{i}", w) for i, w in enumerate(weights)]


def shares(counts: Counter[int], n: int) -> list[float]:
    total = sum(counts.values())
    return [counts[i] / total for i in range(n)]


def stateless(spec: str, picks: int, **kw: object) -> list[float]:
    ts = targets()
    s = create(spec, ts, seed=7, **kw)  # type: ignore[arg-type]
    counts: Counter[int] = Counter()
    for k in range(picks):
        ctx = PickContext(
            client_ip=f"10.{k % 251}.{k // 251 % 251}.{k % 7}",
            path=f"/obj/{k}",
            query=f"a=1&user={k}",
            headers={"X-Tenant": f"t{k}"},
            cookies={"SID": f"sess{k}"},
        )
        t = s.pick(ctx)
        assert t is not None
        counts[t.index] += 1
    return shares(counts, len(ts))


def closed_loop(s: Scheduler, ts: list[Target], concurrency: int, picks: int) -> list[float]:
    """Keep ``concurrency`` requests in flight, each served in one time unit."""
    counts: Counter[int] = Counter()
    heap: list[tuple[float, int, int]] = []
    seq = 0
    now = 0.0
    for _ in range(picks):
        if len(heap) >= concurrency:
            now, _, idx = heapq.heappop(heap)
            s.released(ts[idx])
        t = s.pick(PickContext())
        assert t is not None
        s.taken(t)
        counts[t.index] += 1
        seq += 1
        heapq.heappush(heap, (now + 1.0, seq, t.index))
    return shares(counts, len(ts))


@pytest.mark.parametrize(("spec", "picks", "tol"), [("roundrobin", 1000, 0.0), ("static-rr", 1000, 0.0)])
def test_round_robin_is_exact_over_whole_cycles(spec: str, picks: int, tol: float) -> None:
    assert stateless(spec, picks) == pytest.approx(SHARES, abs=tol)


def test_smooth_round_robin_interleaves() -> None:
    s = create("roundrobin", targets((5, 1, 1)))
    order = "".join("abc"[t.index] for t in (s.pick(PickContext()) for _ in range(7)) if t)
    assert order == "aabacaa"


def test_static_rr_cycle_is_interleaved_too() -> None:
    s = create("static-rr", targets((5, 1, 1)))
    order = "".join("abc"[t.index] for t in (s.pick(PickContext()) for _ in range(7)) if t)
    assert sorted(order) == sorted("aaaaabc")
    assert "aaaaa" not in order


def test_random_is_uniform_within_3_percent() -> None:
    assert stateless("random", 20000) == pytest.approx([0.25] * 4, abs=0.03)


@pytest.mark.parametrize(
    ("spec", "kw", "tol"),
    [
        ("weighted-random", {}, 0.02),
        ("p2c", {}, 0.02),  # idle pool: each pick released at once
        ("source", {}, 0.02),
        ("uri", {}, 0.02),
        ("header(X-Tenant)", {}, 0.02),
        ("cookie(SID)", {}, 0.02),
        ("param(user)", {}, 0.02),
        ("maglev", {}, 0.02),
        ("uri", {"hash_type": "maglev"}, 0.02),
        # A ring with 100 points per unit of weight is only as even as its points.
        ("source", {"hash_type": "consistent"}, 0.04),
        ("uri", {"hash_type": "consistent"}, 0.04),
    ],
)
def test_weighted_shares_within_tolerance(spec: str, kw: dict[str, object], tol: float) -> None:
    assert stateless(spec, 20000, **kw) == pytest.approx(SHARES, abs=tol)


@pytest.mark.parametrize("spec", ["weighted-leastconn", "sed", "nq", "capacity"])
def test_weighted_connection_counts_follow_weights_under_load(spec: str) -> None:
    ts = targets()
    s = create(spec, ts, seed=1)
    assert closed_loop(s, ts, concurrency=40, picks=20000) == pytest.approx(SHARES, abs=0.03)


@pytest.mark.parametrize("spec", ["leastconn", "response-time", "peak-ewma"])
def test_unweighted_connection_counts_spread_evenly_under_load(spec: str) -> None:
    # leastconn ignores weights by definition; the latency ones, with every server
    # equally fast and no latency observed, reduce to it.
    ts = targets((1, 1, 1, 1))
    s = create(spec, ts, seed=1)
    assert closed_loop(s, ts, concurrency=40, picks=20000) == pytest.approx([0.25] * 4, abs=0.02)


def test_capacity_shares_follow_reported_percentages() -> None:
    ts = targets((1, 1, 1, 1))
    s = create("capacity", ts)
    assert isinstance(s, Capacity)
    for t, pct in zip(ts, ("100%", "50%", "50%", "200%"), strict=True):
        s.report(t, pct)
    got = closed_loop(s, ts, concurrency=80, picks=20000)
    assert got == pytest.approx([0.25, 0.125, 0.125, 0.5], abs=0.03)


def test_weight_changes_take_effect_at_once() -> None:
    ts = targets((1, 1))
    s = create("roundrobin", ts)
    s.weight_changed(ts[0], 3)
    counts = Counter(t.index for t in (s.pick(PickContext()) for _ in range(400)) if t)
    assert counts == {0: 300, 1: 100}

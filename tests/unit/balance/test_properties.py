"""Hypothesis properties over every algorithm, under arbitrary hook sequences.

* ``pick`` never returns a down or drained (weight 0) server;
* it returns ``None`` only when no server is usable at all;
* it returns a backup only when no primary is usable;
* it honours ``exclude`` whenever a non-excluded usable server exists.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.balance.base import PickContext, Scheduler, Target, available, create
from pyvs.balance.capacity import Capacity

N = 5

SPECS: list[tuple[str, dict[str, Any]]] = [
    (name, {}) for name in available() if name not in {"header", "cookie", "param", "source", "uri", "maglev"}
]
SPECS += [
    (spec, {"hash_type": ht, **({"table_size": 251} if ht == "maglev" else {})})
    for spec in ("source", "uri(whole)", "header(X-K)", "cookie(K)", "param(k)")
    for ht in ("map", "consistent", "maglev")
]
SPECS += [
    ("maglev", {"table_size": 251}),
    ("source", {"hash_type": "consistent", "balance_factor": 1.25}),
]

op = st.one_of(
    st.tuples(st.just("up"), st.integers(0, N - 1)),
    st.tuples(st.just("down"), st.integers(0, N - 1)),
    st.tuples(st.just("weight"), st.integers(0, N - 1), st.integers(0, 4)),
    st.tuples(st.just("take"), st.integers(0, N - 1)),
    st.tuples(st.just("release"), st.integers(0, N - 1)),
    st.tuples(st.just("observe"), st.integers(0, N - 1), st.floats(0, 2), st.booleans()),
    st.tuples(st.just("report"), st.integers(0, N - 1), st.sampled_from(["50%", "0%", "drain", "ready", "down", "up"])),
    st.tuples(st.just("pick"), st.integers(0, 50), st.frozensets(st.integers(0, N - 1), max_size=3)),
)


def check_pick(s: Scheduler, ts: list[Target], got: Target | None, exclude: frozenset[int]) -> None:
    usable = [t for t in ts if t.eligible and t.weight > 0]
    primaries = [t for t in usable if not t.backup]
    if got is None:
        assert not usable, "None although a server is usable"
        return
    assert got.eligible, f"picked down server {got.name}"
    assert got.weight > 0, f"picked drained server {got.name}"
    if got.backup:
        assert not primaries, "picked a backup while a primary is usable"
    pool = primaries or usable
    if got.index in exclude:
        assert all(t.index in exclude for t in pool), "ignored exclude with alternatives left"


@pytest.mark.parametrize(("spec", "kw"), SPECS, ids=[f"{s}-{k.get('hash_type', '')}" for s, k in SPECS])
@settings(derandomize=True, max_examples=75, deadline=None)
@given(
    weights=st.lists(st.integers(0, 4), min_size=N, max_size=N),
    backups=st.sets(st.integers(0, N - 1), max_size=2),
    ops=st.lists(op, max_size=60),
)
def test_pick_invariants(
    spec: str, kw: dict[str, Any], weights: list[int], backups: set[int], ops: list[tuple[Any, ...]]
) -> None:
    ts = [Target(i, f"s{i}", w, backup=i in backups, maxconn=2) for i, w in enumerate(weights)]
    s = create(spec, ts, seed=0, **kw)
    now = 0.0
    for o in ops:
        kind = o[0]
        now += 0.01
        if kind == "up":
            s.server_up(ts[o[1]])
        elif kind == "down":
            s.server_down(ts[o[1]])
        elif kind == "weight":
            s.weight_changed(ts[o[1]], o[2])
        elif kind == "take":
            s.taken(ts[o[1]])
        elif kind == "release":
            s.released(ts[o[1]])
        elif kind == "observe":
            s.observed(ts[o[1]], o[2], o[3], now)
        elif kind == "report":
            if isinstance(s, Capacity):
                s.report(ts[o[1]], o[2])
        else:
            key, exclude = o[1], o[2]
            ctx = PickContext(
                client_ip=f"10.0.0.{key}", path=f"/{key}", query=f"k={key}",
                headers={"X-K": str(key)} if key % 5 else {}, cookies={"K": str(key)},
                exclude=exclude, now=now,
            )  # fmt: skip
            check_pick(s, ts, s.pick(ctx), exclude)
    check_pick(s, ts, s.pick(PickContext(now=now)), frozenset())

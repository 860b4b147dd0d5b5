"""The stick table as data: idle expiry, refresh on hit, size bound, and a sweep that
agrees with a naive model under any sequence of operations (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.persist.table import StickTable


def test_entry_expires_after_timeout_without_use() -> None:
    t = StickTable(10.0)
    t.put("a", "s1", 0.0)
    assert t.get("a", 9.9) is not None
    assert t.get("a", 10.0) is None  # expired exactly at the deadline
    assert t.hit("a", 10.0) is None


def test_hit_restarts_the_idle_timer_and_get_does_not() -> None:
    t = StickTable(10.0)
    t.put("a", "s1", 0.0)
    assert t.get("a", 5.0) is not None
    assert t.hit("a", 8.0) is not None
    assert t.get("a", 17.0) is not None  # 8 + 10 > 17
    assert t.get("a", 18.0) is None


def test_put_replaces_and_ttl_is_capped_by_timeout() -> None:
    t = StickTable(10.0)
    t.put("a", "s1", 0.0)
    t.put("a", "s2", 1.0, ttl=3.0)
    e = t.get("a", 2.0)
    assert e is not None and e.value == "s2" and e.expires == 4.0
    t.put("b", "s1", 0.0, ttl=1000.0)
    assert t.get("b", 0.0).expires == 10.0  # type: ignore[union-attr]


def test_sweep_drops_expired_and_keeps_refreshed() -> None:
    t = StickTable(10.0)
    for i in range(5):
        t.put(f"k{i}", "s", float(i))
    t.hit("k0", 9.0)
    assert t.expire(12.5) == 2  # k1 (expired 11), k2 (12); k0 lives until 19
    assert sorted(k for k, _ in t.items(12.5)) == ["k0", "k3", "k4"]
    assert t.expirations == 2


def test_sweep_stops_at_the_first_recently_stamped_entry() -> None:
    t = StickTable(10.0)
    for i in range(1000):
        t.put(f"k{i}", "s", 100.0)
    assert t.expire(105.0) == 0  # nothing old enough: constant work, not a scan
    assert t.expire(111.0, limit=10) == 10


def test_size_bound_evicts_the_oldest() -> None:
    t = StickTable(100.0, max_entries=3)
    for i in range(5):
        t.put(f"k{i}", "s", float(i))
    assert len(t) == 3 and t.evictions == 2
    assert "k0" not in t and "k4" in t


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        StickTable(0)
    with pytest.raises(ValueError):
        StickTable(1, max_entries=0)


OPS = st.lists(
    st.tuples(st.sampled_from(["put", "hit", "expire"]), st.sampled_from("abcdef"), st.integers(0, 3)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_matches_a_naive_model(ops: list[tuple[str, str, int]]) -> None:
    timeout = 5.0
    t = StickTable(timeout)
    model: dict[str, tuple[str, float]] = {}
    now = 0.0
    for op, key, step in ops:
        now += step
        if op == "put":
            t.put(key, f"s{step}", now)
            model[key] = (f"s{step}", now + timeout)
        elif op == "hit":
            e = t.hit(key, now)
            live = key in model and model[key][1] > now
            assert (e is not None) == live
            if live:
                model[key] = (model[key][0], now + timeout)
                assert e is not None and e.value == model[key][0]
        else:
            t.expire(now)
        for k, (v, exp) in model.items():
            e = t.get(k, now)
            assert (e is not None) == (exp > now)
            if e is not None:
                assert e.value == v
    t.expire(now)
    assert {k for k, _ in t.items(now)} == {k for k, (_, exp) in model.items() if exp > now}
    # After a sweep nothing stale stays in memory longer than one timeout past its expiry.
    assert all(e.expires > now - timeout for e in t._d.values())

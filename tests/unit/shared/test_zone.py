"""Both zone implementations (C and pure Python) against the same expectations,
in one process and across forked processes."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.shared.zone import CZone, Zone, table_capacity, table_words, tag_of

IMPLS = ["c", "python"]


def make(impl: str, nwords: int = 64) -> Zone:
    if impl == "c" and CZone is None:
        pytest.fail("the C helper pyvs/shared/_zone.c was not built (pip install -e . builds it)")
    z = Zone(nwords, implementation=impl)
    assert z.implementation == impl
    return z


def table(impl: str, max_entries: int) -> tuple[Zone, int]:
    cap = table_capacity(max_entries)
    z = make(impl, 16 + table_words(cap))
    z.init_table(16, cap, max_entries)
    return z, 16


@pytest.mark.parametrize("impl", IMPLS)
def test_words(impl: str) -> None:
    w = make(impl).words
    assert w.add(3, 5) == 5
    assert w.add(3, -2) == 3
    assert w.get(3) == 3
    w.set(4, -7)
    assert w.get(4) == -7
    assert w.cas(4, -7, 9) is True
    assert w.cas(4, -7, 10) is False
    assert w.get(4) == 9
    with pytest.raises(IndexError):
        w.get(64)
    with pytest.raises(IndexError):
        w.add(-1, 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_table_learn_move_put_expire(impl: str) -> None:
    z, base = table(impl, 100)
    w = z.words
    a = tag_of("10.0.0.1")
    assert w.table_get(base, a, 1000, 0) == -1
    assert w.table_claim(base, a, 2, 1000, 500, -1) == 2  # learned
    assert w.table_claim(base, a, 3, 1001, 500, -1) == 2  # a live entry wins a learn
    assert w.table_get(base, a, 1400, 500) == 2  # hit pushes the expiry to 1900
    assert w.table_get(base, a, 1800, 0) == 2
    assert w.table_claim(base, a, 4, 1801, 500, 3) == 2  # move from a server it does not hold: refused
    assert w.table_claim(base, a, 4, 1802, 500, 2) == 4  # move from the one it holds
    assert w.table_claim(base, a, 5, 1803, 500, -2) == 5  # put overwrites
    assert w.table_get(base, a, 2303, 0) == -1  # expired (1803 + 500)
    assert z.table_stats(base) == (0, 0)  # the expired entry was removed by the lookup
    assert w.table_claim(base, a, 6, 3000, 10, -1) == 6  # learn over an expired entry
    assert w.table_del(base, a) is True
    assert w.table_del(base, a) is False


@pytest.mark.parametrize("impl", IMPLS)
def test_table_eviction_is_bounded_and_counted(impl: str) -> None:
    z, base = table(impl, 50)
    w = z.words
    for i in range(200):
        w.table_claim(base, tag_of(f"k{i}"), i, 1000 + i, 10_000, -1)
    entries, evictions = z.table_stats(base)
    assert entries == 50
    assert evictions == 150
    # The most recent entries survive more than the oldest (eviction samples, earliest expiry first).
    recent = sum(w.table_get(base, tag_of(f"k{i}"), 2000, 0) == i for i in range(150, 200))
    old = sum(w.table_get(base, tag_of(f"k{i}"), 2000, 0) == i for i in range(0, 50))
    assert recent > old


@pytest.mark.parametrize("impl", IMPLS)
def test_sweep_removes_only_expired(impl: str) -> None:
    z, base = table(impl, 1000)
    w = z.words
    for i in range(600):
        w.table_claim(base, tag_of(f"k{i}"), i, 0, 100 if i % 2 else 1000, -1)
    removed = 0
    for _ in range(10):
        removed += w.table_sweep(base, 500, 256)
    assert removed == 300
    assert z.table_stats(base)[0] == 300
    assert all(w.table_get(base, tag_of(f"k{i}"), 500, 0) == (i if i % 2 == 0 else -1) for i in range(600))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(IMPLS), st.lists(st.tuples(st.sampled_from(["get", "learn", "put", "del", "sweep"]),
                                                  st.integers(0, 40), st.integers(0, 9)), max_size=150))
def test_table_matches_a_dict(impl: str, ops: list[tuple[str, int, int]]) -> None:
    """No eviction (room for every key): the table behaves as a dict with expiry."""
    z, base = table(impl, 64)
    w = z.words
    model: dict[int, tuple[int, int]] = {}
    now = 0
    for op, k, v in ops:
        now += 7
        tag = tag_of(f"key{k}")
        live = model.get(tag)
        if live is not None and live[1] <= now:
            live = None
        if op == "get":
            assert w.table_get(base, tag, now, 0) == (live[0] if live else -1)
            if live is None:
                model.pop(tag, None)
        elif op == "learn":
            got = w.table_claim(base, tag, v, now, 50, -1)
            assert got == (live[0] if live else v)
            model[tag] = (got, now + 50)
        elif op == "put":
            assert w.table_claim(base, tag, v, now, 50, -2) == v
            model[tag] = (v, now + 50)
        elif op == "del":
            assert w.table_del(base, tag) == (tag in model)
            model.pop(tag, None)
        else:
            w.table_sweep(base, now, 1000)
            model = {t: e for t, e in model.items() if e[1] > now}
    assert z.table_stats(base)[0] <= len(model)
    for t, (val, exp) in model.items():
        assert w.table_get(base, t, now, 0) == (val if exp > now else -1)


@pytest.mark.parametrize("impl", IMPLS)
def test_gcra_rate_and_burst(impl: str) -> None:
    z, base = table(impl, 100)
    w = z.words
    tag = tag_of("client")
    interval, tau = 100, 400  # 10 per 1000 units, burst of 5
    admitted = [w.gcra(base, tag, 0, interval, tau) == 0 for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    assert w.gcra(base, tag, 0, interval, tau) == 100  # wait until a slot frees
    assert w.gcra(base, tag, 100, interval, tau) == 0
    # Steady state at the rate: one every 100 units (201, 301, ... 1101), none between.
    ok = [t for t in range(101, 1111, 10) if w.gcra(base, tag, t, interval, tau) == 0]
    assert ok == list(range(201, 1102, 100))


def _fork_run(n: int, fn: object) -> None:
    """Run ``fn(i)`` in ``n`` forked children; fail if any child fails."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(i)  # type: ignore[operator]
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_counts_are_exact_across_processes(impl: str) -> None:
    z = make(impl)
    n = 20000 if impl == "c" else 3000

    def work(i: int) -> None:
        for _ in range(n):
            z.words.add(5, 1)
            z.words.add(6, -1)

    _fork_run(4, work)
    assert z.words.get(5) == 4 * n
    assert z.words.get(6) == -4 * n


@pytest.mark.parametrize("impl", IMPLS)
def test_one_winner_per_key_across_processes(impl: str) -> None:
    """Four processes learn the same keys at once, each proposing itself: every key
    ends with one value, and every process was told that value."""
    z, base = table(impl, 4000)
    keys = 1500 if impl == "c" else 400
    results = make("c" if CZone is not None else "python", 4 * keys + 8)

    def work(i: int) -> None:
        order = list(range(keys))
        random.Random(i).shuffle(order)
        for k in order:
            got = z.words.table_claim(base, tag_of(f"k{k}"), i, 0, 10**9, -1)
            results.words.set(i * keys + k, got + 1)

    _fork_run(4, work)
    for k in range(keys):
        stored = z.words.table_get(base, tag_of(f"k{k}"), 1, 0)
        assert 0 <= stored < 4
        assert {results.words.get(i * keys + k) - 1 for i in range(4)} == {stored}


def test_a_lock_left_by_a_dead_process_is_taken_over() -> None:
    if CZone is None:
        pytest.fail("the C helper pyvs/shared/_zone.c was not built")
    z, base = table("c", 10)
    dead = subprocess.Popen(["true"])
    dead.wait()
    z.words.set(base, dead.pid)  # the lock word, as if that process died holding it
    assert z.words.table_claim(base, tag_of("k"), 1, 0, 100, -1) == 1
    assert z.words.get(base) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_counts_by_owner_limit_and_a_dead_owner(impl: str) -> None:
    """Per-key counts kept per owner (worker): the limit holds on the total; a dead
    owner's counts go with drop_owner and nobody else's do."""
    z, base = table(impl, 100)
    w = z.words
    a, b = tag_of("10.0.0.1"), tag_of("10.0.0.2")
    assert [w.count_add(base, a, 0, 3, 1, 3, 0, 10**9) for _ in range(2)] == [1, 2]
    assert w.count_add(base, a, 1, 3, 1, 3, 0, 10**9) == 3
    assert w.count_add(base, a, 2, 3, 1, 3, 0, 10**9) == -1  # over the limit, whoever asks
    assert w.count_add(base, b, 2, 3, 1, 3, 0, 10**9) == 1  # another key
    assert w.count_add(base, a, 0, 3, -1, 0, 0, 10**9) == 2
    assert w.count_add(base, a, 2, 3, 1, 3, 0, 10**9) == 3
    assert w.drop_owner(base, 2) == 2  # owner 2 died holding a and b once each
    assert w.count_add(base, a, 1, 3, 0, 0, 0, 10**9) == 2
    assert w.count_add(base, b, 1, 3, 0, 0, 0, 10**9) == 0
    assert w.count_add(base, a, 0, 3, -5, 0, 0, 10**9) == 1  # never below zero
    assert z.table_stats(base)[0] == 1


def test_a_lock_left_by_a_zombie_is_taken_over() -> None:
    """The holder died but is not reaped yet (its parent -- here us -- is the one
    waiting): kill(pid, 0) still succeeds, /proc says Z."""
    if CZone is None:
        pytest.fail("the C helper pyvs/shared/_zone.c was not built")
    z, base = table("c", 10)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = 200
        while Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z" and deadline:
            os.sched_yield()
            deadline -= 1
        z.words.set(base, pid)
        assert z.words.table_claim(base, tag_of("k"), 1, 0, 100, -1) == 1
    finally:
        os.waitpid(pid, 0)

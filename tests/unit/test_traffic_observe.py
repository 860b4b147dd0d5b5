"""The end-of-request traffic update: the C helper and its Python twin agree."""

from __future__ import annotations

import random

import pytest

from pyvs.runtime import stats


def test_c_and_python_observe_give_the_same_list() -> None:
    if stats.observe is stats.observe_py:
        pytest.fail("the C helper pyvs/runtime/_traffic.c was not built (pip install -e . builds it)")
    rng = random.Random(7)
    a = [0.0] * stats.PAIR_LEN
    b = [0.0] * stats.PAIR_LEN
    for _ in range(5000):
        status = rng.choice([0, 101, 200, 204, 301, 404, 499, 502, 504])
        dur = rng.choice([0.0, 0.0005, 0.00051, 0.01, 9.99, 10.0, 11.0, rng.random() * 3])
        n = rng.randrange(0, 1 << 20)
        stats.observe(a, status, dur, n)
        stats.observe_py(b, status, dur, n)
    assert a == b
    assert sum(a[: 10 * stats.NBUCKETS]) == 5000

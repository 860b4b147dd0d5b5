"""The Fenwick weight tree against a naive model (Hypothesis, derandomized)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.balance.weighttree import WeightTree


def naive_find(weights: list[int], x: int) -> int:
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    raise AssertionError("x beyond total")


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), st.integers(0, 20)), max_size=20),
)
def test_matches_naive_model(weights: list[int], updates: list[tuple[int, int]]) -> None:
    tree = WeightTree(weights)
    model = list(weights)
    for i, w in updates:
        i %= len(model)
        tree.set(i, w)
        model[i] = w
        assert tree.total == sum(model)
        for x in range(0, tree.total, max(1, tree.total // 17)):
            assert tree.find(x) == naive_find(model, x)
    assert [tree.get(i) for i in range(len(model))] == model


def test_rejects_out_of_range_and_negative() -> None:
    tree = WeightTree([1, 2])
    with pytest.raises(IndexError):
        tree.find(3)
    with pytest.raises(ValueError):
        tree.set(0, -1)
    with pytest.raises(ValueError):
        WeightTree([-1])

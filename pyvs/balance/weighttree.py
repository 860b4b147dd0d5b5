"""A Fenwick (binary indexed) tree of integer weights, for weighted choices.

Why a tree and not a cumulative list: ``weighted-random``, ``p2c`` and ``map``
hashing all need "which server owns position x of the total weight", and all of
them must follow weight changes at runtime (slow start ramps a weight every few
hundred milliseconds, agents report new capacities). A cumulative list answers in
O(log n) but costs O(n) per change; the tree answers in O(log n) *and* changes in
O(log n), with no allocation on either path.

Slot ``i`` holds the weight of target ``i`` when it is in the pool and 0 otherwise,
so the tree mirrors :meth:`Scheduler.in_pool` and :class:`PoolTree` keeps it so
from the ``pool_changed`` hook.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyvs.balance.base import Scheduler, Target


class WeightTree:
    """Prefix sums over non-negative integer weights with O(log n) update and search."""

    __slots__ = ("_high", "_n", "_tree", "_values", "total")

    def __init__(self, weights: Sequence[int]) -> None:
        n = len(weights)
        self._n = n
        self._values = list(weights)
        tree = [0] * (n + 1)
        for i, w in enumerate(weights):
            if w < 0:
                raise ValueError("weights must not be negative")
            j = i + 1
            tree[j] += w
            parent = j + (j & -j)
            if parent <= n:
                tree[parent] += tree[j]
        self._tree = tree
        self.total = sum(weights)
        high = 1
        while high * 2 <= n:
            high *= 2
        self._high = high

    def __len__(self) -> int:
        return self._n

    def get(self, i: int) -> int:
        return self._values[i]

    def set(self, i: int, weight: int) -> None:
        if weight < 0:
            raise ValueError("weights must not be negative")
        delta = weight - self._values[i]
        if not delta:
            return
        self._values[i] = weight
        self.total += delta
        j = i + 1
        tree = self._tree
        n = self._n
        while j <= n:
            tree[j] += delta
            j += j & -j

    def find(self, x: int) -> int:
        """The slot owning position ``x`` (``0 <= x < total``): the smallest ``i``
        whose prefix sum through ``i`` exceeds ``x``."""
        if not 0 <= x < self.total:
            raise IndexError(f"position {x} outside total weight {self.total}")
        pos = 0
        step = self._high
        tree = self._tree
        n = self._n
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= x:
                pos = nxt
                x -= tree[nxt]
            step >>= 1
        # pos is the longest prefix whose sum is <= x; the next slot (1-based pos + 1,
        # 0-based pos) is the owner.
        return pos


class PoolTree:
    """A :class:`WeightTree` that mirrors a scheduler's pool through its hooks."""

    __slots__ = ("_sched", "tree")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self.tree = WeightTree([t.weight if sched.in_pool(t) else 0 for t in sched.targets])

    def changed(self, target: Target, flipped: bool) -> None:
        """Apply one ``pool_changed`` event: O(log n), or O(n) when the pool flipped."""
        sched = self._sched
        if flipped:
            self.tree = WeightTree([t.weight if sched.in_pool(t) else 0 for t in sched.targets])
        else:
            self.tree.set(target.index, target.weight if sched.in_pool(target) else 0)

    def at(self, x: int) -> Target:
        """The pool member owning weight position ``x`` (``0 <= x < total``)."""
        return self._sched.targets[self.tree.find(x)]

"""Random choices: ``random``, ``weighted-random`` and ``p2c`` (power of two choices).

Why random at all: it needs no shared state, so N worker processes (or N proxies)
balancing the same servers do not synchronise into the same order the way
independent round-robin counters can, and it costs O(1) or O(log n) per pick.

* ``random`` ignores weights: each pool member with equal probability.
* ``weighted-random`` draws a position in the total weight and finds its owner in a
  :class:`~pyvs.balance.weighttree.PoolTree` (O(log n) per pick and per change).
* ``p2c`` draws two *distinct* members, each with probability proportional to its
  weight, and sends the request to the one with fewer outstanding requests (ties to
  the first draw). Mitzenmacher's result: the maximum queue shrinks from
  O(log n / log log n) for one random choice to O(log log n) for two, and the
  second draw costs almost nothing. Because the draws are weighted, an idle pool
  still receives traffic in proportion to the weights.

Randomness comes from the scheduler's own ``random.Random(seed)``.
"""

from __future__ import annotations

from pyvs.balance.base import PickContext, Scheduler, Target, register
from pyvs.balance.weighttree import PoolTree


def weighted_choice(pool: list[Target], x: int) -> Target:
    """The member of ``pool`` owning position ``x`` of its total weight (O(n))."""
    for t in pool:
        x -= t.weight
        if x < 0:
            return t
    return pool[-1]


@register
class RandomScheduler(Scheduler):
    """Uniform random choice over the pool; weights are ignored."""

    name = "random"

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        if not pool:
            return None
        return pool[self.rng.randrange(len(pool))]


@register
class WeightedRandom(Scheduler):
    """Random choice with probability proportional to weight."""

    name = "weighted-random"
    _tree: PoolTree

    def setup(self) -> None:
        self._tree = PoolTree(self)

    def pool_changed(self, target: Target, flipped: bool) -> None:
        self._tree.changed(target, flipped)

    def pick(self, ctx: PickContext) -> Target | None:
        total = self._tree.tree.total
        if not total:
            return None
        if ctx.exclude:
            pool = self.candidates(ctx)
            return weighted_choice(pool, self.rng.randrange(sum(t.weight for t in pool)))
        return self._tree.at(self.rng.randrange(total))


@register
class PowerOfTwo(Scheduler):
    """Two weighted random draws; the one with fewer outstanding requests wins."""

    name = "p2c"
    reads_outstanding = True
    _tree: PoolTree

    def setup(self) -> None:
        self._tree = PoolTree(self)

    def pool_changed(self, target: Target, flipped: bool) -> None:
        self._tree.changed(target, flipped)

    def pick(self, ctx: PickContext) -> Target | None:
        if ctx.exclude:
            return self._pick_from(self.candidates(ctx))
        tree = self._tree.tree
        total = tree.total
        if not total:
            return None
        rng = self.rng
        first = self._tree.at(rng.randrange(total))
        w = tree.get(first.index)
        if w == total:  # the only member
            return first
        # Draw the second without replacement: hide the first for one O(log n) search.
        tree.set(first.index, 0)
        try:
            second = self._tree.at(rng.randrange(total - w))
        finally:
            tree.set(first.index, w)
        return second if second.outstanding < first.outstanding else first

    def _pick_from(self, pool: list[Target]) -> Target | None:
        if not pool:
            return None
        rng = self.rng
        total = sum(t.weight for t in pool)
        first = weighted_choice(pool, rng.randrange(total))
        if len(pool) == 1:
            return first
        rest = [t for t in pool if t is not first]
        second = weighted_choice(rest, rng.randrange(total - first.weight))
        return second if second.outstanding < first.outstanding else first

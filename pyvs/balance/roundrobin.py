"""Round robin: smooth weighted (nginx's algorithm) and static round robin.

Smooth weighted round robin (nginx ``ngx_http_upstream_get_peer``): each pick adds
every pool member's weight to its ``current`` score, takes the highest, and
subtracts the total weight from the winner. With weights 5,1,1 this yields
a a b a c a a rather than a a a a a b c: load is interleaved, not bursty. Over any
window of ``sum(weights)`` picks each server gets exactly its weight's share, and a
weight change takes effect on the next pick at O(1) cost: nothing is rebuilt.

A pick is O(n) in the pool size, which for the tens of servers of a backend is a
short loop over a cached list; the hashing algorithms reuse :func:`smooth_pick`
as their fallback when a request carries no key.

``static-rr`` precomputes one full cycle of that same interleaved order, so each
pick is O(1) however large the pool; the price is that any weight or membership
change rebuilds the cycle in O(sum of weights), which is why HAProxy calls it
static and why it suits large, rarely changing pools.
"""

from __future__ import annotations

from collections.abc import Callable
from math import gcd

from pyvs.balance.base import PickContext, Scheduler, Target, register


def smooth_pick(pool: list[Target], current: list[int]) -> Target | None:
    """One step of smooth weighted round robin over ``pool``; ``current`` is indexed by target."""
    if not pool:
        return None
    if len(pool) == 1:
        return pool[0]
    total = 0
    best = pool[0]
    best_score = -(1 << 62)
    for t in pool:
        score = current[t.index] + t.weight
        current[t.index] = score
        total += t.weight
        if score > best_score:
            best, best_score = t, score
    current[best.index] -= total
    return best


@register
class RoundRobin(Scheduler):
    """Smooth weighted round robin; weights may change at runtime (O(1) per change).

    With a shared position (:meth:`share_sequence`, several workers): the same
    interleaved order, walked as one cycle by the whole instance (each pick draws the
    next position), so three servers see a, b, c whichever worker takes each request.
    """

    name = "roundrobin"

    _current: list[int]

    def setup(self) -> None:
        self._current = [0] * len(self.targets)
        self._draw: Callable[[], int] | None = None
        self._cycle: list[Target] | None = None

    def share_sequence(self, draw: Callable[[], int]) -> None:
        self._draw = draw

    def pool_changed(self, target: Target, flipped: bool) -> None:
        # A returning server starts from a neutral score instead of a stale debt or credit.
        if flipped:
            self._current = [0] * len(self.targets)
        else:
            self._current[target.index] = 0
        self._cycle = None

    def pick(self, ctx: PickContext) -> Target | None:
        draw = self._draw
        if draw is None:
            return smooth_pick(self.candidates(ctx), self._current)
        cycle = self._cycle
        if cycle is None:
            cycle = self._cycle = interleaved_cycle(self.pool(), SHARED_CYCLE_MAX)
        if len(cycle) == 1:
            return cycle[0]  # one server: nothing to rotate (and no shared add)
        return cycle_pick(cycle, draw(), ctx.exclude)


SHARED_CYCLE_MAX = 4096  # longest cycle the shared round robin walks (see interleaved_cycle)


def interleaved_cycle(pool: list[Target], max_len: int = 0) -> list[Target]:
    """One full smooth-weighted cycle over ``pool`` (weights reduced by their gcd).

    ``max_len`` (0: none) bounds the cycle by scaling the weights down (each kept at 1
    or more): shares are then exact to about ``len(pool) / max_len``. The shared round
    robin uses it, because slow start changes weights in steps whose gcd is 1 and a
    cycle of the exact weights could be hundreds of thousands long, rebuilt per step."""
    if not pool:
        return []
    g = 0
    for t in pool:
        g = gcd(g, t.weight)
    weights = {t.index: t.weight // g for t in pool}
    total = sum(weights.values())
    if max_len and total > max_len:
        weights = {i: max(1, w * max_len // total) for i, w in weights.items()}
        total = sum(weights.values())
    current = {t.index: 0 for t in pool}
    cycle: list[Target] = []
    for _ in range(total):
        best = pool[0]
        best_score = -(1 << 62)
        for t in pool:
            current[t.index] += weights[t.index]
            if current[t.index] > best_score:
                best, best_score = t, current[t.index]
        current[best.index] -= total
        cycle.append(best)
    return cycle


def cycle_pick(cycle: list[Target], pos: int, exclude: frozenset[int]) -> Target | None:
    """The member at ``pos`` of the cycle, or the next one not in ``exclude`` (the one
    at ``pos`` when every member is excluded)."""
    n = len(cycle)
    if n == 0:
        return None
    pos %= n
    t = cycle[pos]
    if exclude and t.index in exclude:
        for step in range(1, n):
            cand = cycle[(pos + step) % n]
            if cand.index not in exclude:
                return cand
    return t


@register
class StaticRoundRobin(Scheduler):
    """Precomputed interleaved cycle: O(1) picks, rebuilds on any change (HAProxy static-rr)."""

    name = "static-rr"

    _cycle: list[Target] | None

    def setup(self) -> None:
        self._cycle = None
        self._pos = 0
        self._draw: Callable[[], int] | None = None

    def share_sequence(self, draw: Callable[[], int]) -> None:
        self._draw = draw

    def pool_changed(self, target: Target, flipped: bool) -> None:
        self._cycle = None

    def pick(self, ctx: PickContext) -> Target | None:
        cycle = self._cycle
        if cycle is None:
            cycle = self._cycle = interleaved_cycle(self.pool())
        draw = self._draw
        if draw is not None:
            return cycle_pick(cycle, draw(), ctx.exclude)
        n = len(cycle)
        if n == 0:
            return None
        pos = self._pos % n
        t = cycle[pos]
        if ctx.exclude and t.index in ctx.exclude:
            # Walk on to the next non-excluded entry; give up after one full cycle.
            for step in range(1, n):
                cand = cycle[(pos + step) % n]
                if cand.index not in ctx.exclude:
                    t, pos = cand, (pos + step) % n
                    break
        self._pos = pos + 1
        return t

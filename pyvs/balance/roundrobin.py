"""Round robin: smooth weighted (nginx's algorithm) and static round robin.

Smooth weighted round robin (nginx ``ngx_http_upstream_get_peer``): each pick adds
every eligible target's weight to its ``current`` score, takes the highest, and
subtracts the total weight from the winner. With weights 5,1,1 this yields
a a b a c a a rather than a a a a a b c: load is interleaved, not bursty.
"""

from __future__ import annotations

from pyvs.balance.base import PickContext, Scheduler, Target, register


@register
class RoundRobin(Scheduler):
    """Smooth weighted round robin; weights may change at runtime (O(1) per change)."""

    name = "roundrobin"

    def __init__(self, targets: list[Target], *, seed: int | None = None, arg: str = "") -> None:
        super().__init__(targets, seed=seed, arg=arg)
        self._current = [0] * len(targets)

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        cur = self._current
        total = 0
        best: Target | None = None
        best_score = 0
        for t in pool:
            score = cur[t.index] + t.weight
            cur[t.index] = score
            total += t.weight
            if best is None or score > best_score:
                best, best_score = t, score
        assert best is not None
        cur[best.index] -= total
        return best


@register
class StaticRoundRobin(Scheduler):
    """Plain rotation over eligible targets, each repeated by its weight (HAProxy static-rr)."""

    name = "static-rr"

    def __init__(self, targets: list[Target], *, seed: int | None = None, arg: str = "") -> None:
        super().__init__(targets, seed=seed, arg=arg)
        self._pos = 0
        self._served = 0

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        if not pool:
            return None
        n = len(pool)
        t = pool[self._pos % n]
        self._served += 1
        if self._served >= max(t.weight, 1):
            self._served = 0
            self._pos = (self._pos + 1) % n
        return t

"""Connection-count algorithms: leastconn, weighted-leastconn, sed, nq and first.

All of them read ``Target.outstanding``, which the runtime keeps through the
``taken`` / ``released`` hooks, so they follow the servers' actual backlog rather
than an assumed share: a server that slows down keeps its requests longer, its
count grows and it receives less. That makes them the safe default for long or
uneven requests (database connections, uploads, slow APIs).

Scoring, for a server with ``o`` outstanding and weight ``w`` (lower wins):

==================== ======================= ===========================================
algorithm            score                   origin
==================== ======================= ===========================================
leastconn            ``o``                   LVS ``lc``, nginx ``least_conn`` (unweighted)
weighted-leastconn   ``o / w``               LVS ``wlc``, HAProxy ``leastconn``
sed                  ``(o + 1) / w``         LVS shortest expected delay
nq                   idle first, else sed    LVS never queue
first                first under ``maxconn`` HAProxy ``first``
==================== ======================= ===========================================

Ratios are compared by cross-multiplication (``o1 * w2 < o2 * w1``), never with
floats. Ties are broken by rotating the scan's starting point on every pick, so that
an idle pool is served in turn instead of always by its first member. A pick is one
O(n) pass over the cached pool; weight changes cost nothing (O(1)) because the
score is computed from the live fields.
"""

from __future__ import annotations

from pyvs.balance.base import PickContext, Scheduler, Target, register


class _Rotating(Scheduler):
    """Shared rotation state: where the next tie-breaking scan starts."""

    _rr: int

    def setup(self) -> None:
        self._rr = 0

    def _start(self, n: int) -> int:
        self._rr = (self._rr + 1) % n
        return self._rr


@register
class LeastConn(_Rotating):
    """Fewest outstanding requests; weights ignored (LVS ``lc``)."""

    name = "leastconn"
    reads_outstanding = True

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        start = self._start(n)
        best = pool[start]
        bo = best.outstanding
        for i in range(start + 1, start + n):
            t = pool[i - n if i >= n else i]
            if t.outstanding < bo:
                best, bo = t, t.outstanding
        return best


@register
class WeightedLeastConn(_Rotating):
    """Fewest outstanding requests per unit of weight (LVS ``wlc``)."""

    name = "weighted-leastconn"
    reads_outstanding = True

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        start = self._start(n)
        best = pool[start]
        for i in range(start + 1, start + n):
            t = pool[i - n if i >= n else i]
            if t.outstanding * best.weight < best.outstanding * t.weight:
                best = t
        return best


def _sed_best(pool: list[Target], start: int) -> Target:
    n = len(pool)
    best = pool[start]
    for i in range(start + 1, start + n):
        t = pool[i - n if i >= n else i]
        if (t.outstanding + 1) * best.weight < (best.outstanding + 1) * t.weight:
            best = t
    return best


@register
class ShortestExpectedDelay(_Rotating):
    """Least ``(outstanding + 1) / weight``: the delay a new request would see.

    Unlike ``weighted-leastconn`` it counts the new request itself, so with an idle
    pool it prefers the heaviest (fastest) server instead of any idle one.
    """

    name = "sed"
    reads_outstanding = True

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        return _sed_best(pool, self._start(n))


@register
class NeverQueue(_Rotating):
    """An idle server if there is one (no queueing at all), else ``sed``."""

    name = "nq"
    reads_outstanding = True

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        start = self._start(n)
        # Among idle servers prefer the heaviest: it will finish soonest.
        idle: Target | None = None
        for i in range(start, start + n):
            t = pool[i - n if i >= n else i]
            if t.outstanding == 0 and (idle is None or t.weight > idle.weight):
                idle = t
        return idle if idle is not None else _sed_best(pool, start)


@register
class First(Scheduler):
    """The first server (in config order) below its ``maxconn``.

    Fills servers one after the other, so the tail of the pool stays idle and can
    be powered down or scaled in. When every server is at its ``maxconn`` the
    request goes to the server with the lowest ``outstanding / maxconn`` rather than
    nowhere: queueing is the runtime's job, and ``None`` means "no server".
    A server with ``maxconn`` 0 has no limit, so nothing after it is ever used.
    """

    name = "first"
    reads_outstanding = True

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        if not pool:
            return None
        for t in pool:
            if t.maxconn <= 0 or t.outstanding < t.maxconn:
                return t
        best = pool[0]
        for t in pool:
            if t.outstanding * best.maxconn < best.outstanding * t.maxconn:
                best = t
        return best

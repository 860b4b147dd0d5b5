"""Latency-aware algorithms: ``response-time`` (least EWMA) and ``peak-ewma``.

Both learn from the ``observed(target, latency, ok, now)`` hook, which the runtime
calls when an exchange finishes. A failed exchange counts as at least
``fail_penalty`` seconds (default 1 s): a server that fails fast would otherwise
look like the fastest server in the pool and attract everything ("black hole").
Weights scale the score (a server of weight 2 is allowed twice the cost), which is
how slow start and agent weights still steer these algorithms.

``response-time``
    Keeps a per-sample exponentially weighted moving average of each server's
    latency (``ewma += alpha * (sample - ewma)``, ``alpha`` 0.3) and picks the
    server whose ``ewma * (outstanding + 1) / weight`` is least, i.e. the expected
    time to drain what is already queued there plus the new request. The
    ``outstanding`` factor is what nginx's ``least_time`` adds too: a plain "least
    average latency" rule sends *every* request to the fastest server until its
    average catches up, a herd the simulator shows as a tall p99. It needs no
    clock. A server with no sample scores as described for ``peak-ewma`` below.

``peak-ewma``
    Finagle's and Linkerd's cost: the estimate jumps to any sample above it (the
    *peak*) and otherwise decays toward new samples with a time constant ``decay``
    (10 s): ``cost = cost * w + sample * (1 - w)`` with ``w = exp(-dt / decay)``. At
    pick time the estimate is also aged toward zero by the time since its last
    sample, so a server that was slow once is retried after a while instead of being
    starved forever. Score: ``cost * (outstanding + 1) / weight``. A server with no
    sample scores 0 while idle and ``fail_penalty + outstanding`` while it has an
    unanswered request, so new servers get exactly one probe at a time. It reads
    ``ctx.now`` and the ``now`` argument of ``observed``; without them time stands
    still at the last value seen (tests, or a runtime that forgot to pass it).

Picks are one O(n) pass over the cached pool with the same rotating tie-break as
the connection-count algorithms.
"""

from __future__ import annotations

from math import exp

from pyvs.balance.base import PickContext, Scheduler, Target, register


class _LatencyBase(Scheduler):
    """Per-target estimates plus the rotating scan start."""

    reads_outstanding = True

    _est: list[float]
    _sampled: list[bool]
    _rr: int
    _penalty: float

    def setup(self) -> None:
        self._est = [0.0] * len(self.targets)
        self._sampled = [False] * len(self.targets)
        self._rr = 0
        self._penalty = float(self.options["fail_penalty"])
        if self._penalty < 0:
            raise ValueError("fail_penalty must not be negative")

    def sample(self, latency: float, ok: bool) -> float:
        latency = max(latency, 0.0)
        return latency if ok else max(latency, self._penalty)

    def probe_cost(self, target: Target) -> float:
        """Score of a server with no sample: free while idle, then one probe at a time."""
        return (self._penalty + target.outstanding) if target.outstanding else 0.0

    def estimate(self, target: Target) -> float | None:
        """The current latency estimate in seconds, or None before the first sample."""
        return self._est[target.index] if self._sampled[target.index] else None


@register
class ResponseTime(_LatencyBase):
    """Least EWMA latency, scaled by the work already queued on the server."""

    name = "response-time"
    defaults = {"alpha": 0.3, "fail_penalty": 1.0}
    _alpha: float

    def setup(self) -> None:
        super().setup()
        self._alpha = float(self.options["alpha"])
        if not 0.0 < self._alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")

    def observed(self, target: Target, latency: float, ok: bool, now: float | None = None) -> None:
        s = self.sample(latency, ok)
        i = target.index
        if self._sampled[i]:
            self._est[i] += self._alpha * (s - self._est[i])
        else:
            self._est[i] = s
            self._sampled[i] = True

    def cost(self, target: Target) -> float:
        """The score used by :meth:`pick` (lower wins)."""
        i = target.index
        if not self._sampled[i]:
            return self.probe_cost(target)
        return self._est[i] * (target.outstanding + 1) / target.weight

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        self._rr = start = (self._rr + 1) % n
        cost = self.cost
        best = pool[start]
        best_score = cost(best)
        for i in range(start + 1, start + n):
            t = pool[i - n if i >= n else i]
            score = cost(t)
            if score < best_score:
                best, best_score = t, score
        return best


@register
class PeakEwma(_LatencyBase):
    """Peak-sensitive, time-decaying latency estimate times outstanding requests."""

    name = "peak-ewma"
    defaults = {"decay": 10.0, "fail_penalty": 1.0}
    _stamp: list[float]
    _decay: float
    _now: float

    def setup(self) -> None:
        super().setup()
        self._decay = float(self.options["decay"])
        if self._decay <= 0:
            raise ValueError("decay must be positive")
        self._stamp = [0.0] * len(self.targets)
        self._now = 0.0

    def _clock(self, now: float | None) -> float:
        if now is not None and now > self._now:
            self._now = now
        return self._now

    def observed(self, target: Target, latency: float, ok: bool, now: float | None = None) -> None:
        t_now = self._clock(now)
        s = self.sample(latency, ok)
        i = target.index
        if not self._sampled[i] or s > self._est[i]:
            self._est[i] = s
            self._sampled[i] = True
        else:
            w = exp(-max(t_now - self._stamp[i], 0.0) / self._decay)
            self._est[i] = self._est[i] * w + s * (1.0 - w)
        self._stamp[i] = t_now

    def cost(self, target: Target, now: float) -> float:
        """The score used by :meth:`pick` (lower wins)."""
        i = target.index
        if not self._sampled[i]:
            return self.probe_cost(target)
        aged = self._est[i] * exp(-max(now - self._stamp[i], 0.0) / self._decay)
        return aged * (target.outstanding + 1) / target.weight

    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        now = self._clock(ctx.now)
        self._rr = start = (self._rr + 1) % n
        cost = self.cost
        best = pool[start]
        best_score = cost(best, now)
        for i in range(start + 1, start + n):
            t = pool[i - n if i >= n else i]
            score = cost(t, now)
            if score < best_score:
                best, best_score = t, score
        return best

"""Slow start: a server that comes back ramps its weight up over ``slowstart: 30s``.

Why: a server that has just (re)started has cold caches, an empty connection pool
and maybe a JIT to warm; handing it its full share at once (or, for leastconn, *all*
new requests, since it has zero outstanding) can knock it straight back over.

Sans-I/O: nothing here reads a clock. :func:`slowstart_weight` answers "what is the
effective weight at ``now``" and :class:`SlowStart` is the timer-driven helper the
runtime drives (``next_deadline()`` / ``on_timer(now)``), feeding the results to
``Scheduler.weight_changed``.

The ramp is quantised into ``steps`` (default 20) equal intervals: the weight after
``k`` intervals is ``ceil(weight * k / steps)`` and never below 1, so the server gets
traffic from the first moment. Steps bound the cost: every change is one
``weight_changed`` call, which is O(log n) or O(1) for most algorithms but rebuilds
the table for Maglev, so a ramp should be a handful of calls, not one per request.

Resolution: a weight of 1 cannot ramp (it is 1 from the first step). HAProxy scales
weights by 16 internally for this reason; a runtime that wants smooth ramps on small
weights hands schedulers ``configured weight * WEIGHT_SCALE``. Every algorithm here
only compares weights with each other, so a common factor changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvs.balance.base import Target

WEIGHT_SCALE = 16
DEFAULT_STEPS = 20


def _step_weight(weight: int, k: int, steps: int) -> int:
    return max(1, -(-weight * k // steps))


def _steps_done(elapsed: float, duration: float, steps: int) -> int:
    if elapsed <= 0:
        return 0
    return min(steps, int(elapsed * steps / duration))


def slowstart_weight(weight: int, now: float, since: float, duration: float, steps: int = DEFAULT_STEPS) -> int:
    """The effective weight at ``now`` of a server up since ``since``.

    ``weight`` is the full (configured) weight; ``duration`` 0 disables the ramp.
    A weight of 0 stays 0: a drained server stays drained while it ramps.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if duration <= 0 or weight <= 0:
        return weight
    return _step_weight(weight, _steps_done(now - since, duration, steps), steps)


@dataclass(slots=True)
class _Ramp:
    target: Target
    weight: int
    since: float
    step: int


class SlowStart:
    """Timer-driven ramps for the servers of one backend.

    ``start`` when a server comes up (apply the weight it returns), ``cancel`` when it
    goes down again, and call ``on_timer(now)`` once ``now >= next_deadline()``;
    each ``(target, weight)`` it returns goes to ``scheduler.weight_changed``.
    """

    def __init__(self, duration: float, steps: int = DEFAULT_STEPS) -> None:
        if duration < 0:
            raise ValueError("slowstart duration must not be negative")
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.duration = duration
        self.steps = steps
        self._ramps: dict[int, _Ramp] = {}

    def start(self, target: Target, weight: int, now: float) -> int:
        """Begin ramping ``target`` toward ``weight``; returns the weight to apply now."""
        if self.duration <= 0 or weight <= 0:
            self._ramps.pop(target.index, None)
            return weight
        self._ramps[target.index] = _Ramp(target, weight, now, 0)
        return _step_weight(weight, 0, self.steps)

    def cancel(self, target: Target) -> None:
        self._ramps.pop(target.index, None)

    def retarget(self, target: Target, weight: int, now: float) -> int | None:
        """The full weight changed mid-ramp (operator, agent); returns the weight to
        apply now, or None when ``target`` is not ramping (apply ``weight`` as is)."""
        ramp = self._ramps.get(target.index)
        if ramp is None:
            return None
        ramp.weight = weight
        if weight <= 0:
            self._ramps.pop(target.index)
            return weight
        return _step_weight(weight, ramp.step, self.steps)

    def ramping(self, target: Target) -> bool:
        return target.index in self._ramps

    def next_deadline(self) -> float | None:
        """When the next weight step is due, or None when nothing ramps."""
        if not self._ramps:
            return None
        return min(self._deadline(r) for r in self._ramps.values())

    def on_timer(self, now: float) -> list[tuple[Target, int]]:
        """Advance every due ramp; returns the new weights to apply, in index order."""
        out: list[tuple[Target, int]] = []
        for idx in sorted(self._ramps):
            ramp = self._ramps[idx]
            if now < self._deadline(ramp):
                continue
            # At least one step per due deadline, even if float rounding says otherwise,
            # so that a deadline can never fire twice.
            ramp.step = max(ramp.step + 1, _steps_done(now - ramp.since, self.duration, self.steps))
            if ramp.step >= self.steps:
                del self._ramps[idx]
                out.append((ramp.target, ramp.weight))
            else:
                out.append((ramp.target, _step_weight(ramp.weight, ramp.step, self.steps)))
        return out

    def _deadline(self, ramp: _Ramp) -> float:
        return ramp.since + (ramp.step + 1) * self.duration / self.steps

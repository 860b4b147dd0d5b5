"""``capacity``: weights fed by what each server says it can take (agent check).

The "processing capacity" method: instead of the operator guessing static weights,
each server runs a tiny agent that reports its spare capacity, HAProxy agent-check
style, as one line of words separated by spaces, tabs or commas:

* ``75%`` -- serve 75 % of the configured weight (``0%`` behaves like ``drain``);
* ``drain`` / ``maint`` -- take no new requests; ``ready`` -- back to normal;
* ``up`` / ``down`` (also ``fail``, ``stopped``) -- operational state;
* ``maxconn:N`` -- a new connection limit;
* ``# text`` -- a free-form description that ends the reply.

:func:`parse_agent_reply` turns a line into a frozen :class:`AgentReport` (the health
checker may reuse it); :meth:`Capacity.report` applies one to a target.

Choosing the server: reports arrive every few seconds, so between two reports the
scheduler must still react to what happens. It therefore runs weighted
least-connections (``outstanding / effective weight``, as ``weighted-leastconn``)
on ``effective weight = weight * percent``. The reported percentage is kept in its own
table rather than folded into ``Target.weight``, so an integer weight of 1 still
distinguishes 75 % from 100 %, and ``Target.weight`` stays the operator's number
(or 0 while drained) for the runtime and the dashboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyvs.balance.base import PickContext, Scheduler, Target, register

_SPLIT = re.compile(r"[\s,]+")
MAX_PERCENT = 1000
_DOWN_WORDS = frozenset({"down", "fail", "failed", "stopped"})
_ADMIN_WORDS = frozenset({"ready", "drain", "maint"})


@dataclass(frozen=True, slots=True)
class AgentReport:
    """One parsed agent reply; ``None`` fields were not mentioned."""

    percent: int | None = None
    state: str | None = None  # "up" | "down"
    admin: str | None = None  # "ready" | "drain" | "maint"
    maxconn: int | None = None
    description: str = ""
    unknown: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.percent is not None and not 0 <= self.percent <= MAX_PERCENT:
            raise ValueError(f"agent percentage {self.percent} outside 0..{MAX_PERCENT}")
        if self.state not in (None, "up", "down"):
            raise ValueError(f"agent state {self.state!r} is not up or down")
        if self.admin is not None and self.admin not in _ADMIN_WORDS:
            raise ValueError(f"agent admin state {self.admin!r} unknown")
        if self.maxconn is not None and self.maxconn < 0:
            raise ValueError("agent maxconn must not be negative")


def parse_agent_reply(line: str) -> AgentReport:
    """Parse one agent line, e.g. ``"75% ready maxconn:40 # busy"``.

    Unknown words are kept in ``unknown`` rather than rejected, like HAProxy, so that
    an agent written for a newer protocol still moves weights; a malformed
    percentage or ``maxconn`` is an error because acting on half of it is worse.
    """
    text, _, description = line.partition("#")
    percent: int | None = None
    state: str | None = None
    admin: str | None = None
    maxconn: int | None = None
    unknown: list[str] = []
    for word in _SPLIT.split(text.strip().lower()):
        if not word:
            continue
        if word.endswith("%"):
            try:
                value = float(word[:-1])
            except ValueError:
                raise ValueError(f"bad agent percentage {word!r}") from None
            percent = round(value)
        elif word.startswith("maxconn:"):
            try:
                maxconn = int(word[8:])
            except ValueError:
                raise ValueError(f"bad agent maxconn {word!r}") from None
        elif word == "up":
            state = "up"
        elif word in _DOWN_WORDS:
            state = "down"
        elif word in _ADMIN_WORDS:
            admin = word
        else:
            unknown.append(word)
    return AgentReport(percent, state, admin, maxconn, description.strip(), tuple(unknown))


@register
class Capacity(Scheduler):
    """Weighted least-connections on weights scaled by each server's reported capacity."""

    name = "capacity"
    reads_outstanding = True
    _base: list[int]
    _pct: list[int]
    _off: list[bool]
    _eff: list[int]
    _rr: int

    def setup(self) -> None:
        n = len(self.targets)
        self._base = [t.weight for t in self.targets]
        self._pct = [100] * n
        self._off = [False] * n
        self._eff = [t.weight * 100 for t in self.targets]
        self._rr = 0

    # ---- inputs ----------------------------------------------------------------
    def weight_changed(self, target: Target, weight: int) -> None:
        """The operator's (or slow start's) weight; the reported share still applies."""
        if weight < 0:
            raise ValueError(f"weight of {target.name!r} must not be negative")
        self._base[target.index] = weight
        self._apply(target)

    def report(self, target: Target, reply: str | AgentReport) -> AgentReport:
        """Apply one agent reply to ``target`` and return it parsed."""
        rep = parse_agent_reply(reply) if isinstance(reply, str) else reply
        i = target.index
        if rep.percent is not None:
            self._pct[i] = rep.percent
        if rep.admin is not None:
            self._off[i] = rep.admin != "ready"
        if rep.maxconn is not None:
            target.maxconn = rep.maxconn
        self._apply(target)
        if rep.state == "down" and target.eligible:
            self.server_down(target)
        elif rep.state == "up" and not target.eligible:
            self.server_up(target)
        return rep

    def capacity(self, target: Target) -> int:
        """The last reported percentage for ``target`` (100 until one arrives)."""
        return self._pct[target.index]

    def _apply(self, target: Target) -> None:
        i = target.index
        self._eff[i] = self._base[i] * self._pct[i]
        weight = 0 if self._off[i] or self._eff[i] == 0 else self._base[i]
        super().weight_changed(target, weight)

    # ---- the decision ------------------------------------------------------------
    def pick(self, ctx: PickContext) -> Target | None:
        pool = self.candidates(ctx)
        n = len(pool)
        if n <= 1:
            return pool[0] if pool else None
        self._rr = start = (self._rr + 1) % n
        eff = self._eff
        best = pool[start]
        for i in range(start + 1, start + n):
            t = pool[i - n if i >= n else i]
            if t.outstanding * eff[best.index] < best.outstanding * eff[t.index]:
                best = t
        return best

"""The server state machine, as data.

Theory of operation
-------------------
A server has an *operational* side, decided by health checks with hysteresis (``rise``
consecutive successes bring it up, ``fall`` consecutive failures take it down), and an
*administrative* side, set by its agent or the operator (``ready``, ``drain``,
``maint``). What the data path sees is one of four states derived from both:

========  =======================================================================
UP        takes new requests
DRAIN     finishes what it has and its stuck sessions, takes no new session (HAProxy's drain)
MAINT     out of service by decision; checks go on, nothing is sent
DOWN      failing its checks (or ejected by outlier detection)
========  =======================================================================

``TRANSITIONS`` lists every (state, event) pair that changes the displayed state and
where it can lead; it is derived from the flag rules below and checked against every
event sequence by a Hypothesis test. Check results go through :meth:`feed_check`,
which applies the rise/fall counting and emits ``OP_UP`` / ``OP_DOWN`` events.

Sans-I/O: nothing here reads a clock or touches a socket; tests drive it as data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    MAINT = "MAINT"


class Event(enum.Enum):
    OP_UP = "op_up"  # checks passed `rise` times in a row
    OP_DOWN = "op_down"  # checks failed `fall` times in a row (or the first check failed)
    EJECT = "eject"  # outlier detection
    UNEJECT = "uneject"  # ejection time over
    READY = "ready"  # agent or operator: back in service
    DRAIN = "drain"
    MAINT = "maint"


# The four displayed states are a function of three flags; the table is written over
# the flags so that, e.g., a server in MAINT that fails its checks is DOWN on leaving
# MAINT without a further check.
@dataclass(frozen=True, slots=True)
class Flags:
    op_up: bool = True
    ejected: bool = False
    admin: str = "ready"  # ready | drain | maint

    @property
    def state(self) -> State:
        if self.admin == "maint":
            return State.MAINT
        if not self.op_up or self.ejected:
            return State.DOWN
        if self.admin == "drain":
            return State.DRAIN
        return State.UP


def _apply(flags: Flags, event: Event) -> Flags:
    if event is Event.OP_UP:
        return Flags(True, flags.ejected, flags.admin)
    if event is Event.OP_DOWN:
        return Flags(False, flags.ejected, flags.admin)
    if event is Event.EJECT:
        return Flags(flags.op_up, True, flags.admin)
    if event is Event.UNEJECT:
        return Flags(flags.op_up, False, flags.admin)
    return Flags(flags.op_up, flags.ejected, event.value)


def _all_flags() -> list[Flags]:
    return [Flags(op, ej, ad) for op in (True, False) for ej in (False, True) for ad in ("ready", "drain", "maint")]


# Displayed-state transitions, derived once from the flag rules and kept as a table
# for documentation and tests: {(from_state, event): {to_state, ...}}.
TRANSITIONS: dict[tuple[State, Event], frozenset[State]] = {}
for _f in _all_flags():
    for _e in Event:
        _to = _apply(_f, _e).state
        if _to is not _f.state:
            key = (_f.state, _e)
            TRANSITIONS[key] = TRANSITIONS.get(key, frozenset()) | {_to}


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    event: Event


class ServerHealth:
    """Health of one server: counters, flags, and the derived state."""

    __slots__ = ("fails", "fall", "flags", "oks", "rise", "seen_check")

    def __init__(self, rise: int, fall: int, *, initial_up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.flags = Flags(op_up=initial_up)
        self.oks = 0
        self.fails = 0
        self.seen_check = False

    @property
    def state(self) -> State:
        return self.flags.state

    @property
    def eligible(self) -> bool:
        """May take new requests."""
        return self.flags.state is State.UP

    def feed(self, event: Event) -> Transition | None:
        old = self.flags.state
        self.flags = _apply(self.flags, event)
        new = self.flags.state
        return Transition(old, new, event) if new is not old else None

    def feed_check(self, ok: bool) -> Transition | None:
        """One check result. The first check after start decides at once (a server
        assumed up but dead must not take `fall` intervals of traffic); after that,
        ``rise``/``fall`` consecutive results are needed to change sides."""
        first = not self.seen_check
        self.seen_check = True
        if ok:
            self.fails = 0
            self.oks += 1
            if not self.flags.op_up and (self.oks >= self.rise or first):
                return self.feed(Event.OP_UP)
        else:
            self.oks = 0
            self.fails += 1
            if self.flags.op_up and (self.fails >= self.fall or first):
                return self.feed(Event.OP_DOWN)
        return None

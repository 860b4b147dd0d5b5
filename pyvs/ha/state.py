"""The VRRP state machine (RFC 5798 section 6.4, RFC 3768 section 6.4) as a table.

Theory of operation
-------------------
A :class:`VrrpMachine` never reads the clock and never does I/O: every input takes
``now`` (seconds, any monotonic origin) and returns a list of outputs for the glue to
carry out (:class:`SendAdvert`, :class:`TakeVips`, :class:`ReleaseVips`,
:class:`StateChanged`). Timers are two deadlines, read through
:meth:`VrrpMachine.next_deadline` and fired by :meth:`VrrpMachine.on_timer`.

Inputs are first *classified* into an :class:`Event` (a received advert becomes
``ADVERT_RESIGN``, ``ADVERT_PREVAILS`` -- the sender should be master -- or
``ADVERT_YIELDS`` -- we should be), then looked up in :data:`TRANSITIONS`, which
names the next state and the actions to run in order. A (state, event) pair that
the table does not name raises :class:`InvalidTransition`: the machine never does
something the table does not say.

Timing (RFC 5798): ``skew = (256 - priority) * master_adver_interval / 256`` and
``master_down = 3 * master_adver_interval + skew``; VRRPv2 (RFC 3768) has
``skew = (256 - priority) / 256`` seconds and never learns the master's interval.
A backup that preempts ignores adverts of lower priority, so its master-down timer
runs out and it takes over; with ``preempt`` off, or within ``preempt_delay`` after
start or a fault, it accepts them. A master steps down for a higher priority, or an
equal one from a higher primary address. Priority 255 (the address owner) becomes
master at once; a master that stops or faults sends priority 0 so that backups take
over after ``skew`` instead of ``master_down``. Tracking changes the priority (never
an owner's) or forces the FAULT state, which holds no timers and no addresses.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


class Event(enum.Enum):
    STARTUP = "startup"
    STARTUP_OWNER = "startup_owner"
    SHUTDOWN = "shutdown"
    MASTER_DOWN_TIMER = "master_down_timer"
    ADVER_TIMER = "adver_timer"
    ADVERT_RESIGN = "advert_resign"
    ADVERT_PREVAILS = "advert_prevails"
    ADVERT_YIELDS = "advert_yields"
    PRIORITY_CHANGED = "priority_changed"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    FAULT_CLEARED_OWNER = "fault_cleared_owner"


class Action(enum.Enum):
    SEND_ADVERT = "send_advert"
    SEND_RESIGN = "send_resign"
    TAKE_VIPS = "take_vips"
    RELEASE_VIPS = "release_vips"
    RESET_INTERVAL = "reset_interval"
    LEARN_INTERVAL = "learn_interval"
    ARM_ADVER = "arm_adver"
    ARM_MASTER_DOWN = "arm_master_down"
    ARM_SKEW = "arm_skew"
    START_PREEMPT_DELAY = "start_preempt_delay"
    CLEAR_TIMERS = "clear_timers"


S, E, A = State, Event, Action
_BECOME_MASTER = (A.SEND_ADVERT, A.TAKE_VIPS, A.ARM_ADVER)
_BECOME_BACKUP = (A.RESET_INTERVAL, A.ARM_MASTER_DOWN, A.START_PREEMPT_DELAY)

TRANSITIONS: Final[Mapping[tuple[State, Event], tuple[State, tuple[Action, ...]]]] = {
    # INIT: not running yet (or stopped). Stale VIPs from a crash are removed on the way out.
    (S.INIT, E.STARTUP): (S.BACKUP, (A.RELEASE_VIPS, *_BECOME_BACKUP)),
    (S.INIT, E.STARTUP_OWNER): (S.MASTER, _BECOME_MASTER),
    (S.INIT, E.FAULT): (S.FAULT, (A.RELEASE_VIPS, A.CLEAR_TIMERS)),
    (S.INIT, E.SHUTDOWN): (S.INIT, ()),
    (S.INIT, E.ADVERT_RESIGN): (S.INIT, ()),
    (S.INIT, E.ADVERT_PREVAILS): (S.INIT, ()),
    (S.INIT, E.ADVERT_YIELDS): (S.INIT, ()),
    # BACKUP: listen; take over when the master stays silent for master_down.
    (S.BACKUP, E.MASTER_DOWN_TIMER): (S.MASTER, _BECOME_MASTER),
    (S.BACKUP, E.ADVERT_RESIGN): (S.BACKUP, (A.ARM_SKEW,)),
    (S.BACKUP, E.ADVERT_PREVAILS): (S.BACKUP, (A.LEARN_INTERVAL, A.ARM_MASTER_DOWN)),
    (S.BACKUP, E.ADVERT_YIELDS): (S.BACKUP, ()),
    (S.BACKUP, E.PRIORITY_CHANGED): (S.BACKUP, ()),
    (S.BACKUP, E.FAULT): (S.FAULT, (A.CLEAR_TIMERS,)),
    (S.BACKUP, E.SHUTDOWN): (S.INIT, (A.CLEAR_TIMERS,)),
    # MASTER: hold the VIPs and advertise every interval.
    (S.MASTER, E.ADVER_TIMER): (S.MASTER, (A.SEND_ADVERT, A.ARM_ADVER)),
    (S.MASTER, E.ADVERT_RESIGN): (S.MASTER, (A.SEND_ADVERT, A.ARM_ADVER)),
    (S.MASTER, E.ADVERT_PREVAILS): (S.BACKUP, (A.RELEASE_VIPS, A.LEARN_INTERVAL, A.ARM_MASTER_DOWN)),
    (S.MASTER, E.ADVERT_YIELDS): (S.MASTER, ()),
    (S.MASTER, E.PRIORITY_CHANGED): (S.MASTER, (A.SEND_ADVERT, A.ARM_ADVER)),
    (S.MASTER, E.FAULT): (S.FAULT, (A.SEND_RESIGN, A.RELEASE_VIPS, A.CLEAR_TIMERS)),
    (S.MASTER, E.SHUTDOWN): (S.INIT, (A.SEND_RESIGN, A.RELEASE_VIPS, A.CLEAR_TIMERS)),
    # FAULT: a tracked object failed with weight 0; stay silent until it recovers.
    (S.FAULT, E.FAULT_CLEARED): (S.BACKUP, _BECOME_BACKUP),
    (S.FAULT, E.FAULT_CLEARED_OWNER): (S.MASTER, _BECOME_MASTER),
    (S.FAULT, E.ADVERT_RESIGN): (S.FAULT, ()),
    (S.FAULT, E.ADVERT_PREVAILS): (S.FAULT, ()),
    (S.FAULT, E.ADVERT_YIELDS): (S.FAULT, ()),
    (S.FAULT, E.PRIORITY_CHANGED): (S.FAULT, ()),
    (S.FAULT, E.SHUTDOWN): (S.INIT, ()),
}


class InvalidTransition(RuntimeError):
    """The machine was given an input the table has no row for (a bug, never a packet)."""


@dataclass(frozen=True)
class Params:
    """The configuration the machine needs (validated, so tests can build them by hand)."""

    vrid: int
    priority: int
    advert_interval: float
    primary: IPAddress
    version: int = 3
    preempt: bool = True
    preempt_delay: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1-255, got {self.vrid}")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"priority must be 1-255, got {self.priority}")
        if not 0 < self.advert_interval <= 255:
            raise ValueError(f"advert_interval must be in (0, 255] seconds, got {self.advert_interval}")
        if self.version not in (2, 3):
            raise ValueError(f"version must be 2 or 3, got {self.version}")
        if self.preempt_delay < 0:
            raise ValueError("preempt_delay must not be negative")


@dataclass(frozen=True)
class PeerAdvert:
    """What the machine needs from a validated advert."""

    source: IPAddress
    priority: int
    interval: float


@dataclass(frozen=True)
class SendAdvert:
    """Send one advert now with this priority (0 = resign) and interval."""

    priority: int
    interval: float


@dataclass(frozen=True)
class TakeVips:
    """Add the virtual IPs and announce them (gratuitous ARP / unsolicited NA)."""


@dataclass(frozen=True)
class ReleaseVips:
    """Remove the virtual IPs (idempotent: also used to clean up after a crash)."""


@dataclass(frozen=True)
class StateChanged:
    old: State
    new: State
    event: Event
    priority: int


Output = SendAdvert | TakeVips | ReleaseVips | StateChanged


class VrrpMachine:
    """One virtual router's state; see the module docstring."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.state = State.INIT
        self.fault = False
        self.delta = 0
        self.master_adver_interval = params.advert_interval
        self.adver_at: float | None = None
        self.master_down_at: float | None = None
        self.preempt_until = 0.0
        self.master: IPAddress | None = None
        self.master_priority: int | None = None
        self._advert: PeerAdvert | None = None

    # ------------------------------------------------------------ derived values
    @property
    def priority(self) -> int:
        """The effective priority: configured plus tracking weights, 1-254 (255 is never changed)."""
        if self.params.priority == 255:
            return 255
        return max(1, min(254, self.params.priority + self.delta))

    @property
    def skew_time(self) -> float:
        if self.params.version == 2:
            return (256 - self.priority) / 256
        return (256 - self.priority) * self.master_adver_interval / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.master_adver_interval + self.skew_time

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must next be called, or None when no timer runs."""
        if self.state is State.MASTER:
            return self.adver_at
        if self.state is State.BACKUP:
            return self.master_down_at
        return None

    # ------------------------------------------------------------------ inputs
    def start(self, now: float) -> list[Output]:
        if self.fault:
            return self._fire(Event.FAULT, now)
        return self._fire(Event.STARTUP_OWNER if self.params.priority == 255 else Event.STARTUP, now)

    def stop(self, now: float) -> list[Output]:
        return self._fire(Event.SHUTDOWN, now)

    def on_timer(self, now: float) -> list[Output]:
        if self.state is State.MASTER and self.adver_at is not None and now >= self.adver_at:
            return self._fire(Event.ADVER_TIMER, now)
        if self.state is State.BACKUP and self.master_down_at is not None and now >= self.master_down_at:
            return self._fire(Event.MASTER_DOWN_TIMER, now)
        return []

    def receive(self, advert: PeerAdvert, now: float) -> list[Output]:
        """A validated advert from ``advert.source`` (see :func:`pyvs.ha.packet.validate`)."""
        event = self.classify(advert, now)
        if event is Event.ADVERT_PREVAILS:
            self.master, self.master_priority = advert.source, advert.priority
        elif event is Event.ADVERT_RESIGN and advert.source == self.master:
            self.master, self.master_priority = None, None
        self._advert = advert
        try:
            return self._fire(event, now)
        finally:
            self._advert = None

    def classify(self, advert: PeerAdvert, now: float) -> Event:
        """Which advert event this is in the current state (RFC 5798 section 6.4.2/6.4.3)."""
        if advert.priority == 0:
            return Event.ADVERT_RESIGN
        if self.state is State.MASTER:
            wins = advert.priority > self.priority or (
                advert.priority == self.priority and int(advert.source) > int(self.params.primary)
            )
        else:
            wins = (not self.params.preempt) or now < self.preempt_until or advert.priority >= self.priority
        return Event.ADVERT_PREVAILS if wins else Event.ADVERT_YIELDS

    def set_tracking(self, *, fault: bool, delta: int, now: float) -> list[Output]:
        """New tracking result: ``fault`` forces FAULT; ``delta`` is added to the priority."""
        old_priority = self.priority
        self.delta = delta
        was, self.fault = self.fault, fault
        if self.state is State.INIT:
            return []
        out: list[Output] = []
        if fault and not was:
            out += self._fire(Event.FAULT, now)
        elif was and not fault:
            owner = self.params.priority == 255
            out += self._fire(Event.FAULT_CLEARED_OWNER if owner else Event.FAULT_CLEARED, now)
        elif self.priority != old_priority:
            out += self._fire(Event.PRIORITY_CHANGED, now)
        return out

    # ----------------------------------------------------------------- engine
    def _fire(self, event: Event, now: float) -> list[Output]:
        try:
            new, actions = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise InvalidTransition(f"no transition from {self.state.value} on {event.value}") from None
        out: list[Output] = []
        for action in actions:
            out.extend(self._do(action, now))
        old, self.state = self.state, new
        if new is not old:
            if new is State.MASTER:
                self.master, self.master_priority = self.params.primary, self.priority
            elif old is State.MASTER:
                self.master = self._advert.source if self._advert else None
                self.master_priority = self._advert.priority if self._advert else None
            out.append(StateChanged(old, new, event, self.priority))
        return out

    def _do(self, action: Action, now: float) -> list[Output]:
        if action is Action.SEND_ADVERT:
            return [SendAdvert(self.priority, self.params.advert_interval)]
        if action is Action.SEND_RESIGN:
            return [SendAdvert(0, self.params.advert_interval)]
        if action is Action.TAKE_VIPS:
            return [TakeVips()]
        if action is Action.RELEASE_VIPS:
            return [ReleaseVips()]
        if action is Action.RESET_INTERVAL:
            self.master_adver_interval = self.params.advert_interval
            self.master, self.master_priority = None, None
        elif action is Action.LEARN_INTERVAL:
            if self.params.version == 3 and self._advert is not None:
                self.master_adver_interval = self._advert.interval
        elif action is Action.ARM_ADVER:
            self.adver_at = now + self.params.advert_interval
            self.master_down_at = None
        elif action is Action.ARM_MASTER_DOWN:
            self.master_down_at = now + self.master_down_interval
            self.adver_at = None
        elif action is Action.ARM_SKEW:
            self.master_down_at = now + self.skew_time
            self.adver_at = None
        elif action is Action.START_PREEMPT_DELAY:
            self.preempt_until = now + self.params.preempt_delay
        elif action is Action.CLEAR_TIMERS:
            self.adver_at = self.master_down_at = None
        return []


def diagram() -> str:
    """The transition table as a Mermaid state diagram (docs/ha.md embeds it; a test compares)."""
    lines = ["stateDiagram-v2", "    [*] --> INIT"]
    edges: dict[tuple[State, State], list[str]] = {}
    for (src, event), (dst, _) in TRANSITIONS.items():
        if src is not dst:
            edges.setdefault((src, dst), []).append(event.value)
    for (src, dst), events in edges.items():
        lines.append(f"    {src.value} --> {dst.value}: {', '.join(events)}")
    return "\n".join(lines)

"""The scheduler interface: what every balancing algorithm implements.

Theory of operation
-------------------
A scheduler is sans-I/O: it never reads a clock, never draws from a global random
source and never touches a socket. The data path owns one scheduler instance per
backend (per worker process) and tells it what happens through lifecycle hooks:

* ``server_up`` / ``server_down`` when health or an operator changes eligibility;
* ``weight_changed`` when a server's effective weight changes (agent, slow start, API);
* ``taken`` / ``released`` around each request or connection handed to a server,
  so connection-count algorithms see outstanding work;
* ``observed`` with the latency of a finished exchange, for latency-aware algorithms.

``pick(ctx)`` returns one eligible :class:`Target` or ``None`` when none is eligible.
Backup targets are chosen only when no primary target is eligible.

Targets are plain mutable records shared between the scheduler and the upstream
runtime; schedulers keep any extra per-target state in their own structures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar


@dataclass(eq=False, slots=True)
class Target:
    """One server as a scheduler sees it.

    ``index`` is the position in the backend's server list (stable for the life of
    a config); ``eligible`` is False when the server is down, draining or in
    maintenance; ``outstanding`` counts requests/connections currently in flight
    (kept by ``taken``/``released``).
    """

    index: int
    name: str
    weight: int = 1
    backup: bool = False
    eligible: bool = True
    outstanding: int = 0
    maxconn: int = 0


@dataclass(slots=True)
class PickContext:
    """What a scheduler may look at for one pick.

    Only hashing algorithms read the key fields; everything is optional so that
    the L4 proxies can pass only a client address.
    """

    client_ip: str = ""
    path: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    # Targets already tried for this request (retries skip them when possible).
    exclude: frozenset[int] = frozenset()


class Scheduler:
    """Base class: keeps the target list and implements the hooks as no-ops."""

    name: ClassVar[str] = ""

    def __init__(self, targets: list[Target], *, seed: int | None = None, arg: str = "") -> None:
        self.targets = targets
        self.seed = seed
        self.arg = arg

    # ---- lifecycle hooks -------------------------------------------------
    def server_up(self, target: Target) -> None:
        target.eligible = True

    def server_down(self, target: Target) -> None:
        target.eligible = False

    def weight_changed(self, target: Target, weight: int) -> None:
        target.weight = weight

    def taken(self, target: Target) -> None:
        target.outstanding += 1

    def released(self, target: Target) -> None:
        target.outstanding -= 1

    def observed(self, target: Target, latency: float, ok: bool) -> None:
        """Latency in seconds of one finished exchange; ``ok`` is False on error."""

    # ---- the decision ------------------------------------------------------
    def pick(self, ctx: PickContext) -> Target | None:
        raise NotImplementedError

    # ---- helpers for subclasses --------------------------------------------
    def candidates(self, ctx: PickContext) -> list[Target]:
        """Eligible primaries, else eligible backups; excluded targets dropped when possible."""
        prim = [t for t in self.targets if t.eligible and not t.backup and t.weight > 0]
        pool = prim or [t for t in self.targets if t.eligible and t.backup and t.weight > 0]
        if ctx.exclude and pool:
            rest = [t for t in pool if t.index not in ctx.exclude]
            if rest:
                return rest
        return pool


REGISTRY: dict[str, type[Scheduler]] = {}


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def create(spec: str, targets: list[Target], *, seed: int | None = None) -> Scheduler:
    """Build a scheduler from a config spec such as ``roundrobin`` or ``header(X-User)``."""
    from pyvs.balance import load_all

    load_all()
    name, arg = parse_spec(spec)
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown balance algorithm {spec!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return cls(targets, seed=seed, arg=arg)


def parse_spec(spec: str) -> tuple[str, str]:
    """``header(X-User)`` -> ``("header", "X-User")``; ``roundrobin`` -> ``("roundrobin", "")``."""
    spec = spec.strip()
    if spec.endswith(")") and "(" in spec:
        name, _, rest = spec.partition("(")
        return name.strip(), rest[:-1].strip()
    return spec, ""


PickFn = Callable[[PickContext], "Target | None"]

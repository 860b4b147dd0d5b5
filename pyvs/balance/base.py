"""The scheduler interface: what every balancing algorithm implements.

Theory of operation
-------------------
A scheduler is sans-I/O: it never reads a clock, never draws from a global random
source and never touches a socket. Time arrives as ``PickContext.now`` and as the
``now`` argument of :meth:`Scheduler.observed`; randomness comes from the
scheduler's own ``random.Random(seed)``. The data path owns one scheduler instance
per backend (per worker process) and tells it what happens through lifecycle hooks:

* ``server_up`` / ``server_down`` when health or an operator changes eligibility;
* ``weight_changed`` when a server's effective weight changes (agent, slow start, API);
  weight 0 means *drain*: the server keeps its in-flight work but gets nothing new;
* ``taken`` / ``released`` around each request or connection handed to a server,
  so connection-count algorithms see outstanding work;
* ``observed`` with the latency of a finished exchange, for latency-aware algorithms.

``pick(ctx)`` returns one eligible :class:`Target` or ``None`` when none is eligible.

The pool
--------
A target is *usable* when it is eligible and its weight is above zero. The *pool* is
every usable primary; only when there is none does it become every usable backup
(HAProxy's ``backup`` servers, with ``allbackups`` semantics). ``pick`` returns a
member of the pool and nothing else. ``ctx.exclude`` (targets a retry already tried)
is honoured when the pool has any other member, and ignored otherwise: a retry on
the same server beats no server at all.

Contract with the runtime (why caching is allowed)
--------------------------------------------------
The runtime changes ``Target.eligible`` and ``Target.weight`` *only* through
``server_up`` / ``server_down`` / ``weight_changed``, and ``Target.outstanding``
only through ``taken`` / ``released``. Schedulers rely on that: the base class
caches the pool list and counts usable primaries incrementally, and subclasses
keep derived structures (weight trees, hash rings, Maglev tables) that are updated
from :meth:`Scheduler.pool_changed` instead of being rebuilt on every pick. A
runtime that writes those fields directly would leave every cache stale.

``targets[i].index == i`` is required: per-target state lives in plain lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import ClassVar

HASH_TYPES = frozenset({"map", "consistent", "maglev"})
"""``map``: modulo over weights; ``consistent``: hash ring; ``maglev``: Maglev table."""


@dataclass(eq=False, slots=True)
class Target:
    """One server as a scheduler sees it.

    ``index`` is the position in the backend's server list (stable for the life of
    a config); ``eligible`` is False when the server is down or in maintenance;
    ``weight`` is the *effective* weight (0 = drain); ``outstanding`` counts
    requests/connections currently in flight (kept by ``taken``/``released``);
    ``maxconn`` (0 = unlimited) is read by the ``first`` algorithm.
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

    Only hashing algorithms read the key fields and only latency-aware ones read
    ``now``; everything is optional so that the L4 proxies can pass only a client
    address. ``headers`` may use any case for names; lookups are case-insensitive.
    """

    client_ip: str = ""
    path: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    # Targets already tried for this request (retries skip them when possible).
    exclude: frozenset[int] = frozenset()
    # Monotonic seconds, for algorithms whose state decays with time (peak-ewma).
    now: float | None = None


class Scheduler:
    """Base class: keeps the target list, the pool cache and no-op hooks.

    Subclasses implement :meth:`pick` and, when they keep per-target structures,
    override :meth:`pool_changed` (membership or weight of one target changed) and
    the traffic hooks, calling ``super()`` so that the shared fields stay right.
    """

    name: ClassVar[str] = ""
    #: ``"none"``, ``"optional"`` or ``"required"``: may the spec carry ``(ARG)``?
    arg_kind: ClassVar[str] = "none"
    #: hash types this algorithm understands; non-hashing ones ignore ``hash_type``.
    hash_types: ClassVar[frozenset[str]] = frozenset()
    #: extra keyword options accepted by :func:`create`, with their defaults.
    defaults: ClassVar[dict[str, float]] = {}
    #: does ``pick`` read ``Target.outstanding``? The runtime then refreshes it from
    #: the instance-wide counts before each pick (pyvs/shared/state.py).
    reads_outstanding: ClassVar[bool] = False

    def __init__(
        self,
        targets: list[Target],
        *,
        seed: int | None = None,
        arg: str = "",
        hash_type: str = "map",
        **options: float,
    ) -> None:
        for i, t in enumerate(targets):
            if t.index != i:
                raise ValueError(f"target {t.name!r} has index {t.index}, expected {i}")
            if t.weight < 0:
                raise ValueError(f"target {t.name!r} has a negative weight")
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(sorted(unknown))}")
        self.targets = targets
        self.seed = seed
        self.arg = arg
        self.hash_type = hash_type
        self.options = {**self.defaults, **options}
        self.rng = Random(seed)
        self._pool_cache: list[Target] | None = None
        self._primaries_usable = sum(1 for t in targets if not t.backup and self.usable(t))
        self.setup()

    def setup(self) -> None:
        """Build per-target state; called once at the end of ``__init__`` (options are parsed)."""

    # ---- lifecycle hooks -------------------------------------------------
    def server_up(self, target: Target) -> None:
        self._update(target, target.weight, True)

    def server_down(self, target: Target) -> None:
        self._update(target, target.weight, False)

    def weight_changed(self, target: Target, weight: int) -> None:
        if weight < 0:
            raise ValueError(f"weight of {target.name!r} must not be negative")
        self._update(target, weight, target.eligible)

    def taken(self, target: Target) -> None:
        target.outstanding += 1

    def released(self, target: Target) -> None:
        if target.outstanding > 0:
            target.outstanding -= 1

    def observed(self, target: Target, latency: float, ok: bool, now: float | None = None) -> None:
        """Latency in seconds of one finished exchange; ``ok`` is False on error."""

    def pool_changed(self, target: Target, flipped: bool) -> None:
        """``target`` changed eligibility or weight; ``flipped`` when the pool
        switched between primaries and backups (every member changed)."""

    def share_sequence(self, draw: Callable[[], int]) -> None:
        """Take rotation positions from ``draw`` (0, 1, 2, ... shared by every worker of
        the instance) instead of a private counter. Default: the algorithm has no
        rotation to share (random, hashing, counts)."""

    # ---- the decision ------------------------------------------------------
    def pick(self, ctx: PickContext) -> Target | None:
        raise NotImplementedError

    # ---- helpers for subclasses --------------------------------------------
    @staticmethod
    def usable(target: Target) -> bool:
        return target.eligible and target.weight > 0

    @property
    def backup_mode(self) -> bool:
        """True when no primary is usable, so the pool is made of backups."""
        return self._primaries_usable == 0

    def in_pool(self, target: Target) -> bool:
        """O(1) membership test, kept right by the hooks."""
        return self.usable(target) and target.backup == (self._primaries_usable == 0)

    def pool(self) -> list[Target]:
        """The pool, in index order. Cached until a hook changes it: do not mutate."""
        pool = self._pool_cache
        if pool is None:
            backup = self._primaries_usable == 0
            pool = [t for t in self.targets if t.backup == backup and t.eligible and t.weight > 0]
            self._pool_cache = pool
        return pool

    def candidates(self, ctx: PickContext) -> list[Target]:
        """The pool, without excluded targets when any other remains."""
        pool = self._pool_cache
        if pool is None:
            pool = self.pool()
        if ctx.exclude and pool:
            rest = [t for t in pool if t.index not in ctx.exclude]
            if rest:
                return rest
        return pool

    def _update(self, target: Target, weight: int, eligible: bool) -> None:
        was_backup = self._primaries_usable == 0
        was_usable = self.usable(target)
        target.weight = weight
        target.eligible = eligible
        now_usable = self.usable(target)
        if not target.backup and was_usable != now_usable:
            self._primaries_usable += 1 if now_usable else -1
        self._pool_cache = None
        self.pool_changed(target, was_backup != (self._primaries_usable == 0))


REGISTRY: dict[str, type[Scheduler]] = {}
_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"balance algorithm {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Every registered algorithm name, sorted."""
    from pyvs.balance import load_all

    load_all()
    return sorted(REGISTRY)


def create(
    spec: str,
    targets: list[Target],
    *,
    seed: int | None = None,
    hash_type: str = "map",
    **options: float,
) -> Scheduler:
    """Build a scheduler from a config spec such as ``roundrobin`` or ``header(X-User)``.

    ``hash_type`` selects the key-to-server mapping of hashing algorithms and is
    ignored by the others; ``options`` are algorithm tunables (see each class's
    ``defaults``), e.g. ``table_size`` for Maglev or ``balance_factor`` for
    bounded-load consistent hashing.
    """
    from pyvs.balance import load_all

    load_all()
    name, arg = parse_spec(spec)
    try:
        cls = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown balance algorithm {spec!r}; known: {known}") from None
    if arg and cls.arg_kind == "none":
        raise ValueError(f"balance algorithm {name!r} takes no argument")
    if not arg and cls.arg_kind == "required":
        raise ValueError(f"balance algorithm {name!r} needs an argument, e.g. {name}(NAME)")
    if hash_type not in HASH_TYPES:
        raise ValueError(f"unknown hash_type {hash_type!r}; known: {', '.join(sorted(HASH_TYPES))}")
    if cls.hash_types and hash_type not in cls.hash_types:
        raise ValueError(f"balance algorithm {name!r} does not support hash_type {hash_type!r}")
    return cls(targets, seed=seed, arg=arg, hash_type=hash_type, **options)


def parse_spec(spec: str) -> tuple[str, str]:
    """``header(X-User)`` -> ``("header", "X-User")``; ``roundrobin`` -> ``("roundrobin", "")``."""
    spec = spec.strip()
    name, arg = spec, ""
    if spec.endswith(")") and "(" in spec:
        name, _, rest = spec.partition("(")
        name, arg = name.strip(), rest[:-1].strip()
        if not arg:
            raise ValueError(f"empty argument in balance spec {spec!r}")
    if not _NAME.match(name):
        raise ValueError(f"malformed balance spec {spec!r}")
    return name, arg

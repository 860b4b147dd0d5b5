"""Hashing algorithms: ``source``, ``uri``, ``header(NAME)``, ``cookie(NAME)``,
``param(NAME)`` and ``maglev``, each over one of three key -> server mappings.

Why hash: the same key (client, URL, user) lands on the same server while the
pool is stable, which keeps per-server caches warm and sessions local without any
shared state between workers or proxies.

``hash_type`` chooses the mapping (see :mod:`pyvs.balance.keyhash` for the keys):

``map`` (default)
    ``hash % total_weight`` located in a :class:`~pyvs.balance.weighttree.PoolTree`:
    exact weight shares and O(log n) picks and weight changes, but when the pool
    changes almost every key moves (HAProxy ``map-based``).
``consistent``
    A :class:`~pyvs.balance.ring.HashRing`: only about 1/N of the keys move when one
    of N servers leaves or joins; shares are only as even as the point count allows.
    With ``balance_factor`` c >= 1 the ring has *bounded loads* (Mirrokni, Thorup and
    Zadimoghaddam, 2018; HAProxy ``hash-balance-factor``): a server may take a request
    only while its outstanding count stays within ``ceil(c * (total + 1) * w / W)``,
    c times its weighted share of everything in flight; otherwise the key walks on
    to the next server on the ring. Popular keys then spill instead of overloading
    one server, at the price of some stickiness. 0 (default) disables the bound.
``maglev``
    A :class:`~pyvs.balance.maglev.MaglevTable`: near-perfect balance and O(1)
    picks, about 1/N churn, full table rebuild on any change.

The ``maglev`` *algorithm* is ``source`` hashing with ``hash_type: maglev`` (the
kernel IPVS ``mh`` scheduler also hashes the source), for L4 listeners.

A request without the key goes to smooth round robin over the pool. Retries
(``ctx.exclude``) walk the ring / table onward, or re-hash over the remaining
servers for ``map``, so the retry target is still a function of the key.
"""

from __future__ import annotations

from math import ceil
from typing import ClassVar, Protocol

from pyvs.balance.base import PickContext, Scheduler, Target, register
from pyvs.balance.keyhash import hash64, key_function
from pyvs.balance.maglev import DEFAULT_TABLE_SIZE, MaglevTable
from pyvs.balance.randomized import weighted_choice
from pyvs.balance.ring import HashRing
from pyvs.balance.roundrobin import smooth_pick
from pyvs.balance.weighttree import PoolTree


class _Index(Protocol):
    def changed(self, target: Target, flipped: bool) -> None: ...

    def lookup(self, h: int, ctx: PickContext) -> Target | None: ...


class MapIndex:
    """``hash % total weight`` over the pool's weight tree."""

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._tree = PoolTree(sched)

    def changed(self, target: Target, flipped: bool) -> None:
        self._tree.changed(target, flipped)

    def lookup(self, h: int, ctx: PickContext) -> Target | None:
        if ctx.exclude:
            pool = self._sched.candidates(ctx)
            return weighted_choice(pool, h % sum(t.weight for t in pool)) if pool else None
        total = self._tree.tree.total
        return self._tree.at(h % total) if total else None


class RingIndex:
    """Consistent hashing on a ring, optionally with bounded loads."""

    def __init__(self, sched: Scheduler, replicas: int, balance_factor: float) -> None:
        if balance_factor and balance_factor < 1.0:
            raise ValueError("balance_factor must be 0 (off) or at least 1.0")
        self._sched = sched
        self.factor = balance_factor
        self.ring = HashRing(replicas)
        self._rebuild()

    def _rebuild(self) -> None:
        self.ring.clear()
        for t in self._sched.targets:
            if self._sched.in_pool(t):
                self.ring.set_owner(t.index, t.name, t.weight)

    def changed(self, target: Target, flipped: bool) -> None:
        if flipped:
            self._rebuild()
        elif self._sched.in_pool(target):
            self.ring.set_owner(target.index, target.name, target.weight)
        else:
            self.ring.remove(target.index)

    def lookup(self, h: int, ctx: PickContext) -> Target | None:
        targets = self._sched.targets
        if not self.factor and not ctx.exclude:
            owner = self.ring.lookup(h)
            return None if owner is None else targets[owner]
        bound = self._bound_check()
        fallback: Target | None = None
        for owner in self.ring.walk(h):
            t = targets[owner]
            if t.index in ctx.exclude:
                continue
            if bound is None or bound(t):
                return t
            if fallback is None:
                fallback = t
        if fallback is not None:
            return fallback
        owner = self.ring.lookup(h)  # everything excluded: the retry goes home
        return None if owner is None else targets[owner]

    def _bound_check(self) -> _Bound | None:
        if not self.factor:
            return None
        pool = self._sched.pool()
        total = sum(t.outstanding for t in pool) + 1
        weight = sum(t.weight for t in pool)
        return _Bound(self.factor * total / weight) if weight else None


class _Bound:
    """May ``t`` take one more request: ``o + 1 <= ceil(c * (T + 1) * w / W)``?"""

    __slots__ = ("_per_weight",)

    def __init__(self, per_weight: float) -> None:
        self._per_weight = per_weight

    def __call__(self, t: Target) -> bool:
        # The epsilon keeps a product that should be an exact integer from rounding up.
        return t.outstanding + 1 <= ceil(self._per_weight * t.weight - 1e-9)

    def limit(self, t: Target) -> int:
        return ceil(self._per_weight * t.weight - 1e-9)


class MaglevIndex:
    """Maglev lookup table, rebuilt lazily after changes."""

    def __init__(self, sched: Scheduler, size: int) -> None:
        self._sched = sched
        self.table = MaglevTable(size)
        self._dirty = True
        self.rebuilds = 0

    def changed(self, target: Target, flipped: bool) -> None:
        self._dirty = True

    def refresh(self) -> None:
        if self._dirty:
            self.table.build([(t.index, t.name, t.weight) for t in self._sched.pool()])
            self._dirty = False
            self.rebuilds += 1

    def lookup(self, h: int, ctx: PickContext) -> Target | None:
        self.refresh()
        table = self.table.table
        if not table:
            return None
        targets = self._sched.targets
        size = self.table.size
        slot = h % size
        t = targets[table[slot]]
        if not ctx.exclude or t.index not in ctx.exclude:
            return t
        if all(m.index in ctx.exclude for m in self._sched.pool()):
            return t
        # Walk the table onward: deterministic per key, and each slot is an owner
        # drawn in proportion to weight, so retries spread like first tries.
        for step in range(1, size):
            cand = targets[table[(slot + step) % size]]
            if cand.index not in ctx.exclude:
                return cand
        return t


class HashScheduler(Scheduler):
    """Common body: key extraction, mapping per ``hash_type``, round-robin fallback."""

    key_kind: ClassVar[str] = ""
    hash_types = frozenset({"map", "consistent", "maglev"})
    defaults: ClassVar[dict[str, float]] = {
        "balance_factor": 0.0,
        "replicas": 100,
        "table_size": DEFAULT_TABLE_SIZE,
    }
    index: _Index
    _current: list[int]

    def setup(self) -> None:
        self._key = key_function(self.key_kind, self.arg)
        self._current = [0] * len(self.targets)
        kind = self.effective_hash_type()
        opts, defaults = self.options, self.defaults
        for option, needs in (("balance_factor", "consistent"), ("replicas", "consistent"), ("table_size", "maglev")):
            if opts[option] != defaults[option] and kind != needs:
                raise ValueError(f"{self.name}: option {option} needs hash_type {needs}, not {kind}")
        if kind == "map":
            self.index = MapIndex(self)
        elif kind == "consistent":
            replicas = int(self.options["replicas"])
            self.index = RingIndex(self, replicas, float(self.options["balance_factor"]))
        else:
            self.index = MaglevIndex(self, int(self.options["table_size"]))

    def effective_hash_type(self) -> str:
        return self.hash_type

    def pool_changed(self, target: Target, flipped: bool) -> None:
        self.index.changed(target, flipped)
        self._current[target.index] = 0

    def key(self, ctx: PickContext) -> str | None:
        """The request's key, or None when it has none."""
        return self._key(ctx)

    def pick(self, ctx: PickContext) -> Target | None:
        key = self._key(ctx)
        if key is None:
            return smooth_pick(self.candidates(ctx), self._current)
        return self.index.lookup(hash64(key), ctx)


@register
class SourceHash(HashScheduler):
    """Client address hashing: the same client keeps its server (L4 and L7)."""

    name = "source"
    key_kind = "source"


@register
class UriHash(HashScheduler):
    """Path hashing (``uri(whole)`` adds the query): cache affinity for proxies and CDNs."""

    name = "uri"
    key_kind = "uri"
    arg_kind = "optional"


@register
class HeaderHash(HashScheduler):
    """Hash of one request header, e.g. ``header(X-Tenant)``."""

    name = "header"
    key_kind = "header"
    arg_kind = "required"


@register
class CookieHash(HashScheduler):
    """Hash of one cookie, e.g. ``cookie(SESSIONID)``: stickiness without inserting a cookie."""

    name = "cookie"
    key_kind = "cookie"
    arg_kind = "required"


@register
class ParamHash(HashScheduler):
    """Hash of one query parameter, e.g. ``param(user)``."""

    name = "param"
    key_kind = "param"
    arg_kind = "required"


@register
class Maglev(HashScheduler):
    """Source hashing on a Maglev table, whatever ``hash_type`` says."""

    name = "maglev"
    key_kind = "source"
    hash_types = frozenset()

    def effective_hash_type(self) -> str:
        return "maglev"

"""What lives where in a worker generation's shared zone, and the handles the data
path uses.

Theory of operation
-------------------
The supervisor builds one :class:`SharedState` per worker generation from its
config, before forking the generation's workers; each worker finds it with
:func:`current` (set in the forked child by :func:`attach`). The layout, in int64
words:

``servers``
    one record per server of every backend: ``[active, queued, errors, 0, own_0 ..
    own_{W-1}]`` (``errors``: live-traffic failures in a row, for passive health).
    ``active`` is the instance-wide count of requests (HTTP) or connections (TCP/UDP
    sessions) in flight to the server (backends in ``counted``), changed with one atomic
    add; ``own_i`` is worker *i*'s share of it, written only by worker *i*. When a
    worker dies the supervisor takes its share off ``active`` (:meth:`owner_died`),
    so a dead worker never leaves a count behind. A worker writes its share before
    adding to ``active`` and after taking from it: a worker killed between the two
    leaves ``active`` short by one, never long, and a ``maxconn`` never locks a
    server out.
``backends``
    ``[rr, tail, head, queued, ...]`` per backend: ``rr`` is the round-robin position
    all workers draw from (one atomic add per pick), so round robin is one rotation
    for the instance; ``tail``, ``head`` and ``queued`` order the HTTP queue
    (:mod:`pyvs.l7.queue`), whose ring of abandoned tickets follows the backends.
``tables``
    one stick table per backend with table persistence, one bucket table per rate
    limit, one client table per listener with ``max_client_connections``: see
    :mod:`pyvs.shared.zone`.

The ``cache`` sections keep their words in a zone of their own, a file of their
directory that every generation maps (:mod:`pyvs.accel.cache_files`): the supervisor
opens them with :meth:`SharedState.open_caches` before forking a generation.

A reload builds a new zone for the new generation: counts of requests the old
generation still finishes are not seen by the new one during the grace period
(documented in docs/sessions.md); stick-table entries move through the supervisor's
hub, which hands every live entry to each new worker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvs.shared.zone import Words, Zone, table_capacity, table_words

if TYPE_CHECKING:
    from pyvs.config.schema import Backend, Config

SERVER_FIXED = 4  # active, queued, two spare words
S_ACTIVE, S_QUEUED, S_ERRORS = 0, 1, 2
BACKEND_WORDS = 8
B_RR, B_TAIL, B_HEAD, B_QUEUED = 0, 1, 2, 3
HEADER_WORDS = 8
SWEEP_LIMIT = 4096  # slots looked at per table per sweep
CLIENT_ENTRIES = 65536  # addresses x workers tracked per listener with max_client_connections


def usec(seconds: float) -> int:
    """Monotonic seconds (loop.time(), time.monotonic()) as the zone's integer time."""
    return int(seconds * 1_000_000)


@dataclass(frozen=True)
class TableInfo:
    """Where one table lives and what bounds it."""

    base: int
    capacity: int
    max_entries: int


class SharedState:
    """The zone of one worker generation and its map (built by the supervisor)."""

    def __init__(self, cfg: Config, nworkers: int, *, implementation: str | None = None,
                 rate_tables: dict[str, int] | None = None) -> None:
        self.nworkers = max(1, nworkers)
        self.stride = SERVER_FIXED + self.nworkers
        pos = HEADER_WORDS
        self.servers: dict[tuple[str, str], int] = {}
        for b in cfg.backends:
            for s in b.servers:
                self.servers[(b.name, s.name)] = pos
                pos += self.stride
        # Backends whose counts are kept here: something reads them (a count-reading
        # algorithm, a maxconn). Others count in each worker only: their requests pay
        # nothing for sharing (the plain path), and /status sums the workers' reports.
        self.counted = {b.name for b in cfg.backends if counts_matter(b)}
        self.backends: dict[str, int] = {}
        for b in cfg.backends:
            self.backends[b.name] = pos
            pos += BACKEND_WORDS
        # The HTTP queue's ring of abandoned tickets (pyvs/l7/queue.py), for backends
        # with a server maxconn: two slots per ticket that can be outstanding.
        self.rings: dict[str, tuple[int, int]] = {}
        for b in cfg.backends:
            if any(s.maxconn for s in b.servers):
                size = 8
                while size < 2 * (b.queue.size + self.nworkers):
                    size *= 2
                self.rings[b.name] = (pos, size)
                pos += size
        self.sticks: dict[str, TableInfo] = {}
        for b in cfg.backends:
            p = b.persistence
            if p is not None and p.uses_table:
                cap = table_capacity(p.max_entries)
                self.sticks[b.name] = TableInfo(pos, cap, p.max_entries)
                pos += table_words(cap)
        self.rates: dict[str, TableInfo] = {}
        for name, max_entries in {**rate_limits(cfg), **(rate_tables or {})}.items():
            cap = table_capacity(max_entries)
            self.rates[name] = TableInfo(pos, cap, max_entries)
            pos += table_words(cap)
        # max_client_connections (pyvs/l7/clientcap.py): one entry per worker and address.
        self.clients: dict[str, TableInfo] = {}
        for lst in cfg.listeners:
            if lst.mode == "http" and lst.max_client_connections:
                cap = table_capacity(CLIENT_ENTRIES)
                self.clients[lst.name] = TableInfo(pos, cap, CLIENT_ENTRIES)
                pos += table_words(cap)
        self.zone = Zone(pos, implementation=implementation)
        for t in [*self.sticks.values(), *self.rates.values(), *self.clients.values()]:
            self.zone.init_table(t.base, t.capacity, t.max_entries)
        self.words: Words = self.zone.words
        self.cfg = cfg
        # cache sections (pyvs/accel/cache_files.py), by the id of the section object:
        # the workers inherit the config object, so the id is the same there.
        self.caches: dict[int, Any] = {}

    def open_caches(self, identity: Any) -> None:
        """Create or find every cache section's directory and zone (the supervisor,
        before forking the generation; ``identity``: the workers' user, or None).
        ValueError or OSError says what is wrong."""
        sections = cache_sections(self.cfg)
        if not sections:
            return
        from pyvs.accel.cache_files import open_section

        for where, section in sections:
            try:
                self.caches[id(section)] = open_section(where, section, os.getpid(), identity)
            except OSError as exc:
                raise ValueError(f"{where}.cache.path: {section.path}: {exc.strerror}") from None
        self.owner = -1  # set in a worker by attach()

    # ------------------------------------------------------------ supervisor
    def owner_died(self, owner: int) -> int:
        """Give back every count worker ``owner`` held (it is dead: nothing of it
        can change any more). Returns how many were given back."""
        if not 0 <= owner < self.nworkers:
            return 0
        w = self.words
        total = 0
        for slot in self.servers.values():
            col = slot + SERVER_FIXED + owner
            held = w.get(col)
            if held:
                w.add(slot + S_ACTIVE, -held)
                w.set(col, 0)
                total += held
        for t in self.clients.values():
            w.drop_owner(t.base, owner)
        return total

    def close(self) -> None:
        """This generation is gone: give its memory back (pyvs/shared/zone.py), and
        its descriptors of the cache sections' zones (the files stay)."""
        self.zone.close()
        for area in self.caches.values():
            area.zone.close()

    def sweep(self, now: float | None = None) -> int:
        """Remove expired entries from every table (a bounded slice each call)."""
        t = usec(time.monotonic() if now is None else now)
        swept: int = sum(self.words.table_sweep(x.base, t, SWEEP_LIMIT)
                         for x in [*self.sticks.values(), *self.rates.values(), *self.clients.values()])
        for area in self.caches.values():  # fetches under way (pyvs/accel/cache_files.py)
            swept += area.zone.words.table_sweep(area.fetches.base, t, SWEEP_LIMIT)
        return swept

    def active(self, backend: str, server: str) -> int | None:
        """The instance-wide count of a server (for /status); None when the backend's
        counts are not kept here."""
        slot = self.servers.get((backend, server))
        if slot is None or backend not in self.counted:
            return None
        return max(0, self.words.get(slot + S_ACTIVE))

    def statistics(self) -> dict[str, object]:
        return {
            "queued": {name: max(0, self.words.get(base + B_QUEUED)) for name, base in self.backends.items()
                       if name in self.rings},
            "implementation": self.zone.implementation,
            "bytes": self.zone.nwords * 8,
            "stick_tables": {name: dict(zip(("entries", "evictions"), self.zone.table_stats(t.base), strict=True))
                             for name, t in self.sticks.items()},
        }


def counts_matter(b: Backend) -> bool:
    """Does anything read the backend's in-flight counts: a server ``maxconn``, or an
    algorithm that decides on them (``Scheduler.reads_outstanding``, bounded loads)?"""
    if any(s.maxconn for s in b.servers):
        return True
    from pyvs.balance import load_all
    from pyvs.balance.base import REGISTRY, parse_spec

    load_all()
    cls = REGISTRY.get(parse_spec(b.balance)[0])
    return bool(cls is not None and cls.reads_outstanding) or bool(b.balance_options.get("balance_factor"))


def cache_sections(cfg: Config) -> list[tuple[str, Any]]:
    """Every distinct ``cache`` section of the config, with where it is first written
    (a route without its own uses its listener's: one store)."""
    out: dict[int, tuple[str, Any]] = {}
    for lst in cfg.listeners:
        if lst.mode != "http":
            continue
        if lst.cache is not None:
            out[id(lst.cache)] = (lst.name, lst.cache)
        routes = [(f"routes[{j}]", r) for j, r in enumerate(lst.routes)]
        routes += [(f"vhosts[{i}].routes[{j}]", r) for i, v in enumerate(lst.vhosts) for j, r in enumerate(v.routes)]
        for where, r in routes:
            if r.cache is not None and id(r.cache) not in out:
                out[id(r.cache)] = (f"{lst.name}.{where}", r.cache)
    return list(out.values())


def rate_limits(cfg: Config) -> dict[str, int]:
    """Every ``rate_limit`` of the config by where it is written (``LISTENER`` or
    ``LISTENER.routes[j]`` / ``LISTENER.vhosts[i].routes[j]``, the router's
    ``RouteSpec.where``): its table's name, and its size."""
    out: dict[str, int] = {}
    for lst in cfg.listeners:
        if lst.rate_limit is not None:
            out[lst.name] = lst.rate_limit.max_entries
        routes = [(f"routes[{j}]", r) for j, r in enumerate(lst.routes)]
        routes += [(f"vhosts[{i}].routes[{j}]", r) for i, v in enumerate(lst.vhosts) for j, r in enumerate(v.routes)]
        for where, r in routes:
            if r.rate_limit is not None:
                out[f"{lst.name}.{where}"] = r.rate_limit.max_entries
    return out


_current: SharedState | None = None


def attach(state: SharedState | None, owner: int) -> None:
    """In a forked worker: this process is worker ``owner`` of ``state``'s generation."""
    global _current
    if state is not None:
        state.owner = owner
    _current = state


def current() -> SharedState | None:
    """The shared state of this worker's generation (None outside a supervised worker)."""
    return _current

"""The supervisor's side of stick tables: one authoritative table per backend,
fan-out to workers, and the store that shares them beyond this instance.

Theory of operation
-------------------
Workers decide on their own (a local table lookup, no waiting) and tell the hub
what they learned: ``{"type": "stick", "backend": B, "entries": [[key, server, op], ...]}``,
one message per backend per event-loop iteration. The hub applies each entry to its
table -- a LEARN for a key that already names another live server loses, because
another worker got there first -- and sends the resulting entries to every worker,
batched the same way: ``{"type": "stick", "backend": B, "entries": [[key, server, ttl], ...]}``.
The worker that sent an entry gets it back, which is harmless (entries are
idempotent) and also delivers corrections.

A new or restarted worker gets every live entry when it reports ``ready``.

Staleness bound (one instance): a worker learns of an entry another worker created
after one event-loop iteration in that worker, one in the supervisor and one in
itself -- well under a millisecond on an idle machine, a few milliseconds under load.
A request from the same client arriving on another worker inside that window is
balanced afresh; the LEARN it causes loses against the first one and every worker
converges on the first server. Across nodes, Redis adds its round trips: see
:mod:`pyvs.persist.redis_store`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyvs.persist.store import LEARN, OPS, MemoryStore, Remote, Store
from pyvs.persist.table import StickTable

if TYPE_CHECKING:
    from pyvs.config.schema import Config

log = logging.getLogger("pyvs.persist")

Broadcast = Callable[[dict[str, Any]], None]
CHUNK = 2000  # entries per message to the workers (keeps each JSON line modest)
SWEEP_INTERVAL = 1.0
SWEEP_LIMIT = 20000


class StickHub:
    """All stick tables of one pyvs instance (lives in the supervisor)."""

    def __init__(self, cfg: Config, broadcast: Broadcast, *, store: Store | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.broadcast = broadcast
        self.clock = clock
        self.tables: dict[str, StickTable] = {}
        for b in cfg.backends:
            p = b.persistence
            if p is not None and p.uses_table:
                self.tables[b.name] = StickTable(p.timeout, p.max_entries)
        if store is None:
            if cfg.state.redis:
                from pyvs.persist.redis_store import RedisStore

                store = RedisStore(cfg.state, self)
            else:
                store = MemoryStore()
        self.store = store
        self.pending: dict[str, list[list[Any]]] = {}
        self.conflicts = 0
        self.learned = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    def create(cls, cfg: Config, broadcast: Broadcast) -> StickHub | None:
        """A hub when some backend keeps a stick table; None otherwise (cookies need none)."""
        if not any(b.persistence is not None and b.persistence.uses_table for b in cfg.backends):
            return None
        return cls(cfg, broadcast)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.start()
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.store.stop()

    def _sweep(self) -> None:
        now = self.clock()
        for t in self.tables.values():
            t.expire(now, SWEEP_LIMIT)
        assert self._loop is not None
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    # ---------------------------------------------------------------- workers in
    def on_worker(self, msg: dict[str, Any]) -> None:
        """Entries a worker learned: ``[[key, server, op], ...]``."""
        try:
            backend = str(msg["backend"])
            entries = [(str(k), str(s), str(op)) for k, s, op in msg["entries"]]
        except (KeyError, TypeError, ValueError):
            log.warning("malformed stick message from a worker: %.200r", msg)
            return
        table = self.tables.get(backend)
        if table is None:
            return
        now = self.clock()
        for key, server, op in entries:
            if op not in OPS:
                continue
            e = table.get(key, now)
            if e is not None and op == LEARN and e.value != server:
                # Another worker stuck this key first (or a MOVE overtook this refresh).
                self.conflicts += 1
                self._fanout(backend, key, e.value, e.expires - now)
                continue
            if e is None:
                self.learned += 1
            table.put(key, server, now)
            self._fanout(backend, key, server, table.timeout)
            self.store.write(backend, key, server, op, table.timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        """Messages that give a new worker every live entry."""
        now = self.clock()
        out = []
        for backend, table in self.tables.items():
            entries = [[k, e.value, round(e.expires - now, 3)] for k, e in table.items(now)]
            for i in range(0, len(entries), CHUNK):
                out.append({"type": "stick", "backend": backend, "entries": entries[i : i + CHUNK]})
        return out

    # ---------------------------------------------------------------- store in (Sink)
    def on_remote(self, backend: str, entries: list[Remote]) -> None:
        table = self.tables.get(backend)
        if table is None:
            return
        now = self.clock()
        for key, server, ttl in entries:
            if ttl <= 0:
                continue
            e = table.get(key, now)
            if e is None or e.value != server or e.expires < now + ttl - 1.0:
                table.put(key, server, now, ttl)
                self._fanout(backend, key, server, ttl)

    def backends(self) -> list[str]:
        return list(self.tables)

    def local_entries(self) -> Iterator[tuple[str, str, str, float]]:
        now = self.clock()
        for backend, table in self.tables.items():
            for key, e in table.items(now):
                yield backend, key, e.value, e.expires - now

    # ---------------------------------------------------------------- workers out
    def _fanout(self, backend: str, key: str, server: str, ttl: float) -> None:
        pending = self.pending.get(backend)
        if pending is None:
            pending = self.pending[backend] = []
        pending.append([key, server, round(ttl, 3)])
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._loop is not None:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what this loop iteration produced: one message per backend (chunked)."""
        self._flush_scheduled = False
        pending, self.pending = self.pending, {}
        for backend, entries in pending.items():
            for i in range(0, len(entries), CHUNK):
                self.broadcast({"type": "stick", "backend": backend, "entries": entries[i : i + CHUNK]})

    # ---------------------------------------------------------------- status
    def statistics(self) -> dict[str, Any]:
        return {
            "store": self.store.statistics(),
            "learned": self.learned,
            "conflicts": self.conflicts,
            "tables": {name: {"entries": len(t), "evictions": t.evictions, "expirations": t.expirations}
                       for name, t in self.tables.items()},
        }

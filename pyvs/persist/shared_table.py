"""A backend's stick table in the generation's shared zone: one table for every
worker, so a session is stuck by whichever worker sees it first and every other
worker finds that entry on its very next lookup (no staleness window).

Theory of operation
-------------------
The table (pyvs/shared/_zone.c) maps a key's tag to a server index with an expiry.
Creating an entry is a *claim*: under the table's lock, a live entry wins over the
proposal, so two workers balancing the same new client at the same instant both
come out with the first one's server. Moving a session (its server went down) is a
claim that succeeds only if the entry still names the old server: when two workers
redispatch at once, the second adopts the first one's choice. A hit pushes the
expiry forward in the same locked call.

The supervisor's hub (pyvs/persist/hub.py) still hears of every entry a worker
creates or moves: it keeps the copy that Redis shares with other nodes, that
``/status`` and the stick-table API show, and that a reload hands to the next
generation (entries it sends back are written here as they are: idempotent).
"""

from __future__ import annotations

from pyvs.shared.state import TableInfo, usec
from pyvs.shared.zone import Words, tag_of

PUT = -2
LEARN = -1
_NEVER = 1 << 62


class SharedStickTable:
    """Key -> server index, with idle expiry, shared by the workers of a generation."""

    __slots__ = ("_tags", "base", "capacity", "timeout", "ttl", "words")

    def __init__(self, words: Words, info: TableInfo, timeout: float) -> None:
        self.words = words
        self.base = info.base
        self.capacity = info.capacity
        self.timeout = timeout
        self.ttl = max(1, usec(timeout))
        self._tags: dict[str, int] = {}

    def tag(self, key: str) -> int:
        t = self._tags.get(key)
        if t is None:
            if len(self._tags) >= 65536:
                self._tags.clear()  # a cache of hashes, not state
            t = self._tags[key] = tag_of(key)
        return t

    def lookup(self, key: str, now: float) -> int:
        """The server index of a live entry (its expiry pushed on), or -1."""
        return self.words.table_get(self.base, self.tag(key), usec(now), self.ttl)

    def claim(self, key: str, index: int, now: float, moving_from: int = LEARN) -> int:
        """Propose ``index`` for ``key``; returns the index that holds. ``moving_from``:
        the server a redispatch moves the session away from (LEARN for a new one)."""
        return self.words.table_claim(self.base, self.tag(key), index, usec(now), self.ttl, moving_from)

    def put(self, key: str, index: int, now: float, ttl: float | None = None) -> None:
        """Set ``key`` (an entry from the hub, or a server's own token): overwrites."""
        life = self.ttl if ttl is None else max(1, usec(ttl))
        self.words.table_claim(self.base, self.tag(key), index, usec(now), life, PUT)

    def remove(self, key: str) -> bool:
        return self.words.table_del(self.base, self.tag(key))

    def expire(self, now: float, limit: int) -> int:
        return self.words.table_sweep(self.base, usec(now), limit)

    def clear(self) -> None:
        """Remove every entry (the stick-table API's clear)."""
        while self.words.table_sweep(self.base, _NEVER, self.capacity):
            pass

    def __len__(self) -> int:
        return max(0, self.words.get(self.base + 1))

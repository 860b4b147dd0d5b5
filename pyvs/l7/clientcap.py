"""``max_client_connections``: open connections per client address, counted for the
whole instance (every worker together) in the generation's shared zone.

Theory of operation
-------------------
One table per listener with a cap (:mod:`pyvs.shared.state`), keyed by the client
address; each worker keeps its own count of a key (an entry per worker and address),
and admitting a connection is one locked call that sums the workers' counts and adds
this one only if the total stays within the cap. A worker that dies takes its
entries with it: the supervisor drops them (``drop_owner``), so a crash never locks
a client out. Entries live exactly as long as connections do: they never expire
(the table's sweep would otherwise forget a client holding quiet connections for
long, and let it open as many again).
"""

from __future__ import annotations

from typing import Any

from pyvs.shared.state import SharedState, TableInfo, usec
from pyvs.shared.zone import tag_of

NEVER = 1 << 60  # microseconds: entries end with their last connection, not with time


class ClientCap:
    """Admit or refuse a client's connection against the instance-wide cap."""

    __slots__ = ("_clock", "_tags", "base", "cap", "owner", "owners", "refused", "ttl", "words")

    def __init__(self, state: SharedState, info: TableInfo, cap: int, clock: Any) -> None:
        self.words = state.words
        self.base = info.base
        self.owner = state.owner
        self.owners = state.nworkers
        self.cap = cap
        self._clock = clock
        self.ttl = NEVER
        self._tags: dict[str, int] = {}
        self.refused = 0

    def _tag(self, ip: str) -> int:
        t = self._tags.get(ip)
        if t is None:
            if len(self._tags) >= 65536:
                self._tags.clear()
            t = self._tags[ip] = tag_of(ip)
        return t

    def admit(self, ip: str) -> bool:
        """Count one more connection of ``ip``; False (nothing counted) over the cap."""
        n = self.words.count_add(self.base, self._tag(ip), self.owner, self.owners, 1, self.cap,
                                 usec(self._clock()), self.ttl)
        if n < 0:
            self.refused += 1
            return False
        return True

    def leave(self, ip: str) -> None:
        self.words.count_add(self.base, self._tag(ip), self.owner, self.owners, -1, 0, usec(self._clock()), self.ttl)

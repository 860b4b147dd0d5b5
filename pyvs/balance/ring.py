"""A consistent-hash ring (Karger et al.), updated one server at a time.

Theory of operation
-------------------
Each server owns ``weight * replicas`` points placed on a 48-bit circle at
``hash64(f"{name}-{i}")``; a key belongs to the first point at or after its own
hash, walking clockwise. When a server leaves, only the keys that fell on *its*
points move (to the next points along), so about 1/N of the keys move when one of
N servers goes, against nearly all of them for ``map`` hashing. Placement depends
only on names and weights, never on order or on a random seed, so every worker and
every pyvs instance builds the same ring.

Points are stored as one sorted ``list[int]`` of ``(position << 16) | owner``: a
lookup is one ``bisect`` (O(log P)), and the owner comes out of the low 16 bits
without a second list to keep in step. Changing one server (up, down, new weight)
touches only that server's points: the others are neither re-hashed nor moved
(a filter plus a merge of two sorted runs, linear in the ring size, no hashing).

``walk(key)`` yields distinct owners in ring order starting at the key; the
bounded-load rule in :mod:`pyvs.balance.hashing` uses it to pass a full server's
keys to the next server on the ring.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from pyvs.balance.keyhash import hash64

MAX_OWNERS = 1 << 16
MAX_POINTS_PER_OWNER = 25_600


class HashRing:
    """Sorted ring points with per-owner incremental updates."""

    __slots__ = ("_count", "_names", "_points", "replicas")

    def __init__(self, replicas: int = 100) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.replicas = replicas
        self._points: list[int] = []
        self._count: dict[int, int] = {}
        self._names: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._points)

    @property
    def owners(self) -> int:
        """How many distinct owners have points on the ring."""
        return len(self._count)

    def points_of(self, weight: int) -> int:
        """How many points an owner of ``weight`` gets (0 for weight 0)."""
        return min(max(weight, 0) * self.replicas, MAX_POINTS_PER_OWNER)

    def set_owner(self, index: int, name: str, weight: int) -> None:
        """Give ``index`` the points its ``weight`` earns, adding or removing only the difference."""
        if not 0 <= index < MAX_OWNERS:
            raise ValueError(f"ring owner index {index} outside 0..{MAX_OWNERS - 1}")
        old = self._count.get(index, 0)
        if old and self._names[index] != name:
            self.remove(index)
            old = 0
        new = self.points_of(weight)
        if new == old:
            return
        if new == 0:
            self.remove(index)
            return
        self._names[index] = name
        self._count[index] = new
        if new > old:
            added = sorted(self._point(name, i, index) for i in range(old, new))
            # Two sorted runs: Timsort merges them in linear time.
            self._points.extend(added)
            self._points.sort()
        else:
            gone = {self._point(name, i, index) for i in range(new, old)}
            self._points = [p for p in self._points if p not in gone]

    def remove(self, index: int) -> None:
        if self._count.pop(index, 0):
            del self._names[index]
            self._points = [p for p in self._points if p & 0xFFFF != index]

    def clear(self) -> None:
        self._points = []
        self._count.clear()
        self._names.clear()

    def lookup(self, key: int) -> int | None:
        """The owner of 64-bit ``key``, or None on an empty ring."""
        points = self._points
        if not points:
            return None
        i = bisect_left(points, (key >> 16) << 16)
        if i == len(points):
            i = 0
        return points[i] & 0xFFFF

    def walk(self, key: int) -> Iterator[int]:
        """Distinct owners in clockwise order from ``key``; each owner once."""
        points = self._points
        n = len(points)
        if not n:
            return
        want = len(self._count)
        seen: set[int] = set()
        i = bisect_left(points, (key >> 16) << 16)
        for step in range(n):
            owner = points[(i + step) % n] & 0xFFFF
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == want:
                    return

    @staticmethod
    def _point(name: str, i: int, index: int) -> int:
        return ((hash64(f"{name}-{i}") >> 16) << 16) | index

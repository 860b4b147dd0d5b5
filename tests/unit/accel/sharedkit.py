"""Shared cache stores for unit tests: two 'workers' (stores) over one zone and one
directory, in one process."""

from __future__ import annotations

from pathlib import Path

from pyvs.accel.shared_store import SharedStore
from pyvs.shared.state import CACHE_WORDS, CacheArea, TableInfo
from pyvs.shared.zone import Zone, table_capacity, table_words


def shared_area(tmp_path: Path, implementation: str = "c") -> tuple[CacheArea, Zone]:
    cap = table_capacity(64)
    area = CacheArea(0, TableInfo(CACHE_WORDS, cap, 64), str(tmp_path / "pyvs-cache-1" / "section"), "test")
    zone = Zone(CACHE_WORDS + table_words(cap), implementation=implementation)
    zone.init_table(area.fetches.base, cap, 64)
    return area, zone


def shared_stores(tmp_path: Path, n: int = 2, *, size: int = 100_000, max_object: int = 10_000,
                  local: int = 100_000, implementation: str = "c") -> list[SharedStore]:
    area, zone = shared_area(tmp_path, implementation)
    return [SharedStore(area, zone.words, size=size, max_object=max_object, local=local) for _ in range(n)]

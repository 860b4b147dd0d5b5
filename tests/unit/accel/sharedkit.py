"""Shared cache stores for unit tests: two 'workers' (stores) over one section (its
directory and zone file), in one process."""

from __future__ import annotations

from pathlib import Path

from pyvs.accel.cache_files import CacheArea, open_section
from pyvs.accel.shared_store import SharedStore
from pyvs.config.accel_schema import Cache


def shared_area(tmp_path: Path, implementation: str = "c", section: Cache | None = None) -> CacheArea:
    section = section or Cache(path=str(tmp_path))
    area = open_section("test", section, 1, None)
    if implementation != "c":  # the pure-Python twin over the same file
        from pyvs.shared.zone import Zone

        zone = Zone(area.zone.nwords, implementation=implementation, path=f"{area.directory}/.zone")
        area = CacheArea(area.directory, area.where, zone, area.fetches)
    return area


def shared_stores(tmp_path: Path, n: int = 2, *, size: int = 100_000, max_object: int = 10_000,
                  local: int = 100_000, implementation: str = "c") -> list[SharedStore]:
    area = shared_area(tmp_path, implementation)
    return [SharedStore(area, size=size, max_object=max_object, local=local) for _ in range(n)]

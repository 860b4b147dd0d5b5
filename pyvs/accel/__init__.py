"""HTTP acceleration filters: response compression (compress.py), buffering (buffer.py)
and the cache (cache.py; its store shared by the workers in shared_store.py).

Each is an ordinary filter of a route's chain (pyvs/l7/filters/base.py), built by
:func:`accel_filters` from the route's (else the listener's) settings; a route without
them never imports this package's engines.
"""

from __future__ import annotations

from typing import Any

from pyvs.l7.filters.base import Filter


def accel_filters(route: Any, listener: Any) -> tuple[Filter, ...]:
    """The acceleration filters of one route: its own keys, else its listener's."""
    out: list[Filter] = []

    def pick(key: str) -> Any:
        value = getattr(route, key, None) if route is not None else None
        return value if value is not None else getattr(listener, key, None)

    buffer_request = pick("buffer_request")
    buffer_response = pick("buffer_response")
    if buffer_request is not None:
        from pyvs.accel.buffer import BufferRequest

        out.append(BufferRequest(buffer_request))
    if buffer_response is not None:
        from pyvs.accel.buffer import BufferResponse

        out.append(BufferResponse(buffer_response))
    compress = pick("compress")
    if compress is not None:
        from pyvs.accel.compress import Compression

        comp = Compression(compress)
        _COMPRESSION.append(comp.stats)
        out.append(comp)
    cache = pick("cache")
    if cache is not None:  # after compress: it records what the client gets (a variant per Accept-Encoding)
        from pyvs.accel.cache import HttpCache

        store = _STORES.get(id(cache))
        if store is None or _STORES_CFG.get(id(cache)) is not cache:
            store = _STORES[id(cache)] = _new_store(cache)
            _STORES_CFG[id(cache)] = cache
        out.append(HttpCache(cache, store))
    return tuple(out)


# One store per cache section in this worker: the routes that inherit the listener's
# `cache` share it (keyed by the section object, kept alive beside it).
_STORES: dict[int, Any] = {}
_STORES_CFG: dict[int, Any] = {}


def _new_store(cache: Any) -> Any:
    """The section's store: shared by the workers of a supervised generation
    (pyvs/accel/shared_store.py), else this process's own."""
    from pyvs.accel.cache import CacheStore
    from pyvs.shared.state import current

    state = current()
    area = state.caches.get(id(cache)) if state is not None else None
    if area is None:
        return CacheStore(cache.size, cache.max_object)
    from pyvs.accel.shared_store import SharedStore

    return SharedStore(area, size=cache.size, max_object=cache.max_object, local=min(cache.local, cache.size))


_COMPRESSION: list[Any] = []  # every compress filter's counters in this worker


def report(cfg: Any) -> dict[str, Any]:
    """This worker's acceleration counters for /status: each cache section's (by where
    it is written) and compression summed over routes. Empty without either."""
    out: dict[str, Any] = {}
    if _STORES:
        from pyvs.shared.state import cache_sections

        names = {id(section): where for where, section in cache_sections(cfg)}
        out["caches"] = {names.get(k, str(k)): {**store.statistics(), "shared": hasattr(store, "area")}
                         for k, store in _STORES.items()}
    if _COMPRESSION:
        out["compression"] = {name: sum(getattr(st, name) for st in _COMPRESSION)
                              for name in ("responses", "skipped", "bytes_in", "bytes_out")}
    return out


def aggregate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' :func:`report`s summed for the instance. A shared store's size,
    entries and evictions are the zone's (the same in every report): taken once."""
    caches: dict[str, dict[str, Any]] = {}
    compression: dict[str, int] = {}
    for rep in reports:
        accel = rep.get("accel") or {}
        for where, st in (accel.get("caches") or {}).items():
            into = caches.setdefault(where, {})
            for name, value in st.items():
                if name == "shared":
                    into[name] = value
                elif st.get("shared") and name in ("entries", "bytes", "evictions"):
                    into[name] = max(into.get(name, 0), value)
                else:
                    into[name] = into.get(name, 0) + value
        for name, value in (accel.get("compression") or {}).items():
            compression[name] = compression.get(name, 0) + value
    out: dict[str, Any] = {}
    if caches:
        out["caches"] = caches
    if compression:
        out["compression"] = compression
    return out


def cache_stores() -> list[Any]:
    """This worker's cache stores (statistics, purge)."""
    return list(_STORES.values())


def parse_purge_url(url: str) -> tuple[str, str, bool]:
    """``http://host/path?q`` or ``host/path``, optionally ending in ``*`` (a prefix):
    (host, target, prefix). ValueError with the reason when it is not one."""
    prefix = url.endswith("*")
    text = url[:-1] if prefix else url
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("http", "https"):
            raise ValueError(f"url: expected http://host/path, got {url!r}")
    host, slash, rest = text.partition("/")
    if not host or (not slash and not prefix):
        raise ValueError(f"url: expected http://host/path (a trailing * for a prefix), got {url!r}")
    return host.lower(), slash + rest, prefix


def purge(msg: dict[str, Any]) -> int:
    """A ``cache_purge`` message in a worker: drop the URL (or prefix) from every store
    (a shared store: this worker's copies; the supervisor purges the files)."""
    from pyvs.accel.cache import cache_key
    from pyvs.l7.request import normalise_host

    # The stores key requests by the host as routing sees it (no port, lower case).
    key = cache_key(normalise_host(str(msg["host"]).encode()), str(msg["target"]).encode())
    return sum(store.purge(key) if msg.get("prefix") else store.invalidate(key) for store in _STORES.values())

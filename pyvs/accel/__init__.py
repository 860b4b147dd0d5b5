"""HTTP acceleration filters: response compression (compress.py) and buffering (buffer.py).

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

        out.append(Compression(compress))
    cache = pick("cache")
    if cache is not None:  # after compress: it records what the client gets (a variant per Accept-Encoding)
        from pyvs.accel.cache import CacheStore, HttpCache

        store = _STORES.get(id(cache))
        if store is None or _STORES_CFG.get(id(cache)) is not cache:
            store = _STORES[id(cache)] = CacheStore(cache.size, cache.max_object)
            _STORES_CFG[id(cache)] = cache
        out.append(HttpCache(cache, store))
    return tuple(out)


# One store per cache section in this worker: the routes that inherit the listener's
# `cache` share it (keyed by the section object, kept alive beside it).
_STORES: dict[int, Any] = {}
_STORES_CFG: dict[int, Any] = {}


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
    """A ``cache_purge`` message in a worker: drop the URL (or prefix) from every store."""
    from pyvs.accel.cache import cache_key
    from pyvs.l7.request import normalise_host

    # The stores key requests by the host as routing sees it (no port, lower case).
    key = cache_key(normalise_host(str(msg["host"]).encode()), str(msg["target"]).encode())
    return sum(store.purge(key) if msg.get("prefix") else store.invalidate(key) for store in _STORES.values())

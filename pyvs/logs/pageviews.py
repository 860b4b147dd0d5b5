"""Page views (PV) and unique visitors (UV), counted in workers, merged in the supervisor.

Theory of operation
-------------------
A request is a page view when its method is one of ``pageviews.methods`` (GET), its
status is 2xx, its path does not end in an asset extension (``.css``, ``.js``, ...)
and the response's Content-Type starts with one of ``content_types`` (``text/html``).
Per vhost (the route's vhost name, else the listener's name) a worker counts

- page views per wall-clock minute and per path prefix (the first ``prefix_depth``
  path segments: ``/blog/``), at most ``MAX_KEYS`` prefixes per vhost and minute;
- visitors in a :class:`~pyvs.logs.hll.HyperLogLog` per vhost and hour: no address
  is kept, only the sketch's registers;
- page views per URL path (for the top list) and every request's status class.

Each stats report (``global.stats_interval``) carries what changed since the last
one (:meth:`PageViews.take`) and the worker starts afresh, so the supervisor can add
reports up as they come (:meth:`PageViewStore.merge`): minutes are summed, sketch
registers are merged by maximum into the hour's and the day's sketch (UTC days).
The store keeps the last hour of minutes, the current and previous hour and day
sketches, and a bounded table of URL counts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pyvs.logs.formats import content_type
from pyvs.logs.hll import HyperLogLog, hash64

if TYPE_CHECKING:
    from pyvs.config.log_schema import PageViewConfig
    from pyvs.http.h1 import RequestHead, ResponseHead

MAX_KEYS = 200  # distinct prefixes (and URLs) per vhost kept between two reports; the rest is "(other)"
MAX_VHOSTS = 256
CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def prefix_of(path: bytes, depth: int) -> str:
    """The first ``depth`` segments of ``path``: ``/blog/2024/x`` at depth 1 is ``/blog/``."""
    if depth == 0:
        return "/"
    segs = path.split(b"/", depth + 1)
    if len(segs) <= depth + 1:  # not deeper than the prefix: the path itself
        return path.decode("utf-8", "replace") or "/"
    return (b"/".join(segs[: depth + 1]) + b"/").decode("utf-8", "replace")


class PageViews:
    """One worker's counts since its last report."""

    def __init__(self, cfg: PageViewConfig, clock: Any = time.time) -> None:
        self.methods = frozenset(m.encode() for m in cfg.methods)
        self.types = tuple(t.lower().encode() for t in cfg.content_types)
        self.assets = tuple(e.encode() for e in cfg.exclude_extensions)
        self.depth = cfg.prefix_depth
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self.minutes: dict[int, dict[str, dict[str, int]]] = {}
        self.urls: dict[str, dict[str, int]] = {}
        self.status: dict[str, list[int]] = {}
        self.uv: dict[tuple[int, str], HyperLogLog] = {}

    def record(self, vhost: str, head: RequestHead, status: int, rh: ResponseHead | None, client: bytes) -> None:
        st = self.status.get(vhost)
        if st is None:
            if len(self.status) >= MAX_VHOSTS:
                return
            st = self.status[vhost] = [0] * 6
        klass = status // 100
        st[klass if 1 <= klass <= 5 else 0] += 1
        if head.method not in self.methods or not 200 <= status < 300:
            return
        path = head.target.split(b"?", 1)[0]
        if path.lower().endswith(self.assets):
            return
        if self.types:
            ct = content_type(rh)
            if ct is None or not ct.lower().startswith(self.types):
                return
        now = self.clock()
        minute = int(now // 60) * 60
        per_minute = self.minutes.setdefault(minute, {}).setdefault(vhost, {})
        _bump(per_minute, prefix_of(path, self.depth))
        _bump(self.urls.setdefault(vhost, {}), path.decode("utf-8", "replace"))
        key = (int(now // 3600) * 3600, vhost)
        sketch = self.uv.get(key)
        if sketch is None:
            sketch = self.uv[key] = HyperLogLog()
        sketch.add_hash(hash64(client))

    def take(self) -> dict[str, Any] | None:
        """What changed since the last call (JSON-ready), or None when nothing did."""
        if not self.status:
            return None
        out = {
            "minutes": {str(m): v for m, v in self.minutes.items()},
            "urls": self.urls,
            "status": self.status,
            "uv": [[hour, vhost, sk.take_changes()] for (hour, vhost), sk in self.uv.items()],
        }
        self._reset()
        return out


def _bump(table: dict[str, int], key: str, n: int = 1) -> None:
    if key in table:
        table[key] += n
    elif len(table) < MAX_KEYS:
        table[key] = n
    else:
        table["(other)"] = table.get("(other)", 0) + n


class PageViewStore:
    """The supervisor's view: every worker's reports added up."""

    def __init__(self, top: int, clock: Any = time.time) -> None:
        self.top = top
        self.clock = clock
        self.minutes: dict[int, dict[str, dict[str, int]]] = {}
        self.urls: dict[str, dict[str, int]] = {}
        self.status: dict[str, list[int]] = {}
        self.hours: dict[tuple[int, str], HyperLogLog] = {}
        self.days: dict[tuple[int, str], HyperLogLog] = {}

    def merge(self, rep: dict[str, Any]) -> None:
        for m, vhosts in rep.get("minutes", {}).items():
            into = self.minutes.setdefault(int(m), {})
            for vhost, prefixes in vhosts.items():
                table = into.setdefault(vhost, {})
                for p, n in prefixes.items():
                    table[p] = table.get(p, 0) + int(n)
        for vhost, paths in rep.get("urls", {}).items():
            table = self.urls.setdefault(vhost, {})
            for p, n in paths.items():
                table[p] = table.get(p, 0) + int(n)
            if len(table) > 20 * self.top + 1000:  # keep the table bounded: the long tail goes
                keep = sorted(table.items(), key=lambda kv: -kv[1])[: 10 * self.top + 500]
                self.urls[vhost] = dict(keep)
        for vhost, counts in rep.get("status", {}).items():
            st = self.status.setdefault(vhost, [0] * 6)
            for i, n in enumerate(counts[:6]):
                st[i] += int(n)
        for hour, vhost, changes in rep.get("uv", []):
            hour = int(hour)
            self.hours.setdefault((hour, vhost), HyperLogLog()).merge_changes(changes)
            self.days.setdefault((hour - hour % 86400, vhost), HyperLogLog()).merge_changes(changes)
        self._expire()

    def _expire(self) -> None:
        now = self.clock()
        for m in [m for m in self.minutes if m < now - 3660]:
            del self.minutes[m]
        for k in [k for k in self.hours if k[0] < now - 7200]:
            del self.hours[k]
        for k in [k for k in self.days if k[0] < now - 2 * 86400]:
            del self.days[k]

    def report(self) -> dict[str, Any]:
        """``GET /pageviews`` and ``/status`` key ``pageviews``."""
        now = self.clock()
        this_minute = int(now // 60) * 60
        hour = int(now // 3600) * 3600
        day = hour - hour % 86400
        vhosts = sorted(set(self.status) | {v for per in self.minutes.values() for v in per})
        out: dict[str, Any] = {}
        for v in vhosts:
            last_min = sum(self.minutes.get(this_minute - 60, {}).get(v, {}).values())
            current = sum(self.minutes.get(this_minute, {}).get(v, {}).values())
            hour_pv = sum(sum(per.get(v, {}).values()) for m, per in self.minutes.items() if m > now - 3600)
            prefixes: dict[str, int] = {}
            for m, per in self.minutes.items():
                if m > now - 3600:
                    for p, n in per.get(v, {}).items():
                        prefixes[p] = prefixes.get(p, 0) + n
            series = [[m, sum(self.minutes[m].get(v, {}).values())] for m in sorted(self.minutes)
                      if m > now - 3600]
            urls = sorted(self.urls.get(v, {}).items(), key=lambda kv: (-kv[1], kv[0]))[: self.top]
            st = self.status.get(v, [0] * 6)
            hs = self.hours.get((hour, v))
            ds = self.days.get((day, v))
            out[v] = {
                "pv_current_minute": current,
                "pv_last_minute": last_min,
                "pv_last_hour": hour_pv,
                "pv_per_minute": series,
                "pv_by_prefix_last_hour": dict(sorted(prefixes.items(), key=lambda kv: -kv[1])),
                "uv_hour": hs.count() if hs is not None else 0,
                "uv_day": ds.count() if ds is not None else 0,
                "top_urls": [{"path": p, "pv": n} for p, n in urls],
                "status": {c: st[i] for i, c in enumerate(CLASSES) if i},
            }
        return {"enabled": True, "vhosts": out}


def merge_report(store: PageViewStore | None, top: int, rep: dict[str, Any]) -> PageViewStore:
    """The supervisor's store with one worker report added (made on the first one)."""
    if store is None:
        store = PageViewStore(top)
    store.merge(rep)
    return store


def status(store: PageViewStore | None) -> dict[str, Any]:
    """``/status`` key ``pageviews`` and ``GET /pageviews``."""
    return store.report() if store is not None else {"enabled": False, "vhosts": {}}

"""Request rate limits (nginx ``limit_req`` with ``nodelay``), exact across workers.

Theory of operation
-------------------
Each ``rate_limit`` (a listener's, run before routing, or a route's, first in its
chain) owns a table in the generation's shared zone (:mod:`pyvs.shared.state`):
key tag -> *theoretical arrival time* (TAT), the generic cell rate algorithm. With
``interval = 1 / rate`` and ``tau = burst * interval``, a request at ``now`` is
admitted when ``max(TAT, now) - now <= tau`` and then moves the TAT on by one
interval; otherwise it is refused with ``status`` (429) and ``Retry-After`` set to
the seconds until it would be admitted. So a key gets ``burst + 1`` requests at
once and then one per interval, and over a window ``T`` at most
``burst + 1 + rate * T`` -- the same figure whatever worker takes each request,
because the check and the update are one locked call on the shared table. One
table entry per active key; an entry whose TAT has passed is removed by the sweep
(it equals a fresh key), and a full table forgets the key idle longest.

A request without the key (no such header or cookie) is not limited, as nginx
does with an empty key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvs.config.limits_schema import RateLimit, parse_key
from pyvs.l7.filters.base import Filter, Reply, Verdict
from pyvs.shared.state import TableInfo, usec
from pyvs.shared.zone import Words, tag_of

if TYPE_CHECKING:
    from pyvs.l7.filters.base import FilterExchange


class RateLimitFilter(Filter):
    """Refuse requests over ``rate`` (plus ``burst``) per key."""

    __slots__ = (
        "_clock",
        "_cookie",
        "_header",
        "_replies",
        "_stats",
        "_tags",
        "base",
        "interval",
        "kind",
        "status",
        "tau",
        "words",
    )
    name = "rate_limit"
    requests = True

    def __init__(self, cfg: RateLimit, words: Words, info: TableInfo, clock: Any, stats: Any) -> None:
        self.kind, name = parse_key(cfg.key)
        self._header = name.encode() if self.kind == "header" else b""
        self._cookie = name.encode() if self.kind == "cookie" else b""
        self.interval = max(1, round(1_000_000 / cfg.per_second))
        self.tau = cfg.burst * self.interval
        self.status = cfg.status
        self.words = words
        self.base = info.base
        self._clock = clock  # monotonic seconds (the worker's loop.time)
        self._stats = stats  # the worker's counters (rate_limited)
        self._tags: dict[bytes, int] = {}
        self._replies: dict[int, Reply] = {}

    def key(self, ex: FilterExchange) -> bytes | None:
        view = ex.view
        if self.kind == "client_ip":
            return view.client_ip or None
        if self.kind == "header":
            return view.header(self._header) or None
        return view.cookie(self._cookie) or None

    def on_request(self, ex: FilterExchange) -> Verdict:
        key = self.key(ex)
        if key is None:
            return Verdict.CONTINUE
        tag = self._tags.get(key)
        if tag is None:
            if len(self._tags) >= 65536:
                self._tags.clear()  # a cache of hashes, not state
            tag = self._tags[key] = tag_of(key.decode("latin-1"))
        wait = self.words.gcra(self.base, tag, usec(self._clock()), self.interval, self.tau)
        if not wait:
            return Verdict.CONTINUE
        self._stats.rate_limited += 1
        seconds = max(1, -(-wait // 1_000_000))
        reply = self._replies.get(seconds)
        if reply is None:
            reply = Reply(self.status, b"Retry-After: %d\r\nCache-Control: no-store\r\n"
                          b"Content-Type: text/plain; charset=utf-8\r\n" % seconds, b"Too many requests\n")
            if len(self._replies) < 64:
                self._replies[seconds] = reply
        ex.reply = reply
        return Verdict.RESPOND

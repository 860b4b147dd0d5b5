"""``cache``: a shared HTTP cache in memory (RFC 9111), one store for all workers.

Theory of operation
-------------------
The cache is a response filter and a request filter of the route's chain.

*Request* (``on_request``): an unsafe method (anything but GET, HEAD, OPTIONS, TRACE)
invalidates the stored responses of its target (RFC 9111 4.4) and goes on to the
server. A GET or HEAD looks up its key (Host and request target); among the stored
variants of that key the one whose ``Vary`` fields match the request's (RFC 9111 4.1)
answers, if it is still fresh (its current age, 4.2.3, below its lifetime, and below a
request ``max-age``) and the request does not ask for the server (``no-cache``,
``max-age=0``, ``Pragma: no-cache``). The answer is an ordinary reply of the exchange
(``ex.reply``, verdict RESPOND) with ``Age`` and ``X-Cache: HIT``: no server is
picked.

*Response* (``on_response``): a response that :func:`pyvs.accel.freshness.storable`
admits gets a recording body stage; the body goes on to the client unchanged as it
is read, and a copy is kept up to ``max_object`` (a larger body stops the recording
and streams through uncached). At the end the entry (head fields without hop-by-hop
fields, Content-Length or Age; the body; the times of 4.2.3) goes into the store.
A 2xx/3xx answer to an unsafe method also invalidates its same-host ``Location`` and
``Content-Location``.

*Store*: :class:`pyvs.accel.shared_store.SharedStore` in a supervised worker (every
worker of the instance sees what one stored; see that module), else
:class:`CacheStore`, an ``OrderedDict`` of keys in LRU order, each holding its
variants; either way its bytes (heads and bodies) never pass ``size``: inserting
evicts least recently used keys first.

*Collapsing*: the first GET miss of a key claims its fetch (in the shared zone, for
the instance); later misses of the key, in this worker or another, wait for its
response: in this worker woken when it is stored, in another by a poll of the store
every ``FETCH_POLL`` seconds. They wait at most ``LOCK_TIMEOUT``.

*With compression* on the same route: the cache comes after ``compress`` in the chain,
so what it records is what the client got -- the compressed variant for that
``Accept-Encoding`` (the response carries ``Vary: Accept-Encoding``, which makes it a
variant key). A client with another Accept-Encoding misses and gets its own variant.

*Stale entries*: revalidated with the entry's validator (a 304 refreshes it, 4.3.4);
served stale within ``stale-if-error`` when the server fails, and within
``stale-while-revalidate`` at once while one background request refreshes the entry
(:mod:`pyvs.accel.revalidate`). ``no-cache`` responses are not stored.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvs.accel.freshness import current_age, directives, http_date, lifetime, request_wants_fresh, seconds, storable
from pyvs.http.h1 import LENGTH, NO_BODY, strip_hop_fields
from pyvs.l7.filters.base import Filter, Reply, Verdict, drop_length
from pyvs.l7.request import field_pattern

if TYPE_CHECKING:
    from pyvs.config.accel_schema import Cache
    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.filters.base import FilterExchange

SAFE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_CC = field_pattern(b"cache-control")
_VARY = field_pattern(b"vary")
_DATE = field_pattern(b"date")
_EXPIRES = field_pattern(b"expires")
_LAST_MODIFIED = field_pattern(b"last-modified")
_AGE = field_pattern(b"age")
# The request fields that change what the cache does; most requests have none of them.
_REQUEST_FIELDS = re.compile(rb"(?i)\r\n(?:cache-control|pragma|if-none-match|if-modified-since)[ \t]*:")
_ETAG = field_pattern(b"etag")
_IF_NONE_MATCH = field_pattern(b"if-none-match")
# What a 304 from cache carries of the stored head (RFC 9110 15.4.5).
_NOT_MODIFIED_FIELDS = re.compile(
    rb"(?im)^(?:cache-control|content-location|date|etag|expires|vary|last-modified)[ \t]*:[^\r\n]*\r\n")
LOCK_TIMEOUT = 5.0  # collapsed requests wait at most this for the first one (nginx's proxy_cache_lock_timeout)
FETCH_POLL = 0.02  # how often requests waiting for another worker's fetch look at the store
_LOCATION = field_pattern(b"location")
_CONTENT_LOCATION = field_pattern(b"content-location")
_STRIP = re.compile(rb"(?im)^(?:age|x-cache)[ \t]*:[^\r\n]*\r\n")
ENTRY_OVERHEAD = 256  # bytes counted per entry besides its head and body


def _first(pat: re.Pattern[bytes], block: bytes) -> bytes | None:
    m = pat.search(block)
    return m.group(1).strip() if m is not None else None


def _joined(pat: re.Pattern[bytes], block: bytes) -> bytes | None:
    values = [v.strip() for v in pat.findall(block)]
    return b", ".join(values) if values else None


class Entry:
    """One stored response (a variant of its key)."""

    __slots__ = ("age_value", "body", "date", "etag", "fields", "last_modified", "lifetime", "replies",
                 "request_time", "response_time", "size", "status", "vary")

    def __init__(self, status: int, fields: bytes, body: bytes, vary: tuple[tuple[bytes, bytes | None], ...],
                 *, request_time: float, response_time: float, date: float | None, age_value: float,
                 lifetime: float) -> None:
        self.status = status
        self.fields = fields  # field lines without Content-Length, Age, hop-by-hop fields
        self.body = body
        self.vary = vary  # (lower-cased name, the request's value) per Vary field name
        self.request_time = request_time
        self.response_time = response_time
        self.date = date
        self.age_value = age_value
        self.lifetime = lifetime
        self.size = len(fields) + len(body) + ENTRY_OVERHEAD
        block = b"\r\n" + fields
        self.etag = _first(_ETAG, block)
        self.last_modified = http_date(_first(_LAST_MODIFIED, block))
        # The hit reply for the current whole-second age, reused (with the encodings
        # Reply keeps) until the age changes: a hit then costs a few lookups.
        self.replies: tuple[int, Reply] | None = None

    def age(self, now: float) -> float:
        return current_age(now=now, request_time=self.request_time, response_time=self.response_time,
                           date=self.date, age_value=self.age_value)


class CacheStore:
    """Keys in LRU order, each with its variants; bounded in bytes."""

    __slots__ = ("bytes", "collapsed", "entries", "evictions", "hits", "keys", "limit", "max_object", "misses",
                 "stores")

    def __init__(self, limit: int, max_object: int) -> None:
        self.limit = limit
        self.max_object = max_object
        self.keys: OrderedDict[bytes, list[Entry]] = OrderedDict()
        self.bytes = 0
        self.entries = 0
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.evictions = 0
        self.collapsed = 0  # requests that waited for another's response instead of asking the server

    def variants(self, key: bytes) -> list[Entry] | None:
        got = self.keys.get(key)
        if got is not None:
            self.keys.move_to_end(key)
        return got

    def put(self, key: bytes, entry: Entry) -> None:
        """Store ``entry``, replacing the variant with the same Vary values."""
        if entry.size > self.limit:
            return
        variants = self.keys.get(key)
        if variants is None:
            variants = self.keys[key] = []
        else:
            self.keys.move_to_end(key)
            for old in [v for v in variants if v.vary == entry.vary]:
                variants.remove(old)
                self.bytes -= old.size
                self.entries -= 1
        variants.append(entry)
        self.bytes += entry.size
        self.entries += 1
        self.stores += 1
        while self.bytes > self.limit:
            _, evicted = self.keys.popitem(last=False)
            for v in evicted:
                self.bytes -= v.size
                self.entries -= 1
                self.evictions += 1

    def claim_fetch(self, key: bytes) -> bool:
        """May this worker's first miss of ``key`` go to the server (no other worker's
        is on its way)? A store of one worker: always."""
        return True

    def release_fetch(self, key: bytes) -> None:
        """The fetch claimed for ``key`` is over (stored or not)."""

    def version(self, key: bytes) -> object:
        """What changes when another worker stores or drops ``key`` (shared stores)."""
        return None

    def fetching_elsewhere(self, key: bytes) -> bool:
        """Is another worker's fetch of ``key`` still on its way?"""
        return False

    def invalidate(self, key: bytes) -> int:
        """Drop every variant of ``key``; how many there were."""
        variants = self.keys.pop(key, None)
        if not variants:
            return 0
        for v in variants:
            self.bytes -= v.size
            self.entries -= 1
        return len(variants)

    def purge(self, prefix: bytes) -> int:
        """Drop every key that starts with ``prefix`` (``host + target``); how many."""
        keys = [k for k in self.keys if k.startswith(prefix)]
        return sum(self.invalidate(k) for k in keys)

    def statistics(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "stores": self.stores, "evictions": self.evictions,
                "collapsed": self.collapsed, "entries": self.entries, "bytes": self.bytes}


class Recorder:
    """Body stage of a storable response: passes the body on, keeps a copy up to the bound."""

    __slots__ = ("abandon", "finish", "limit", "parts", "size")

    def __init__(self, limit: int, finish: Callable[[bytes], None], abandon: Callable[[], None]) -> None:
        self.parts: list[bytes] | None = []
        self.size = 0
        self.limit = limit
        self.finish = finish
        self.abandon = abandon

    def feed(self, data: bytes, end: bool) -> bytes:
        parts = self.parts
        if parts is not None:
            self.size += len(data)
            if self.size > self.limit:
                self.parts = None  # too large: streams through uncached
                self.abandon()
            else:
                if data:
                    parts.append(data)
                if end:
                    self.finish(b"".join(parts))
        return data


def cache_key(host: bytes, target: bytes) -> bytes:
    return host.lower() + b" " + target


class Replay:
    """Body stage that sends a stored body instead of the server's (304 refresh, stale-if-error)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def feed(self, data: bytes, end: bool) -> bytes:
        return self.body if end else b""


def _conditional(ex: FilterExchange) -> bool:
    view = ex.view
    return view.header(b"if-none-match") is not None or view.header(b"if-modified-since") is not None


def _format_date(t: float) -> bytes:
    from email.utils import formatdate

    return formatdate(t, usegmt=True).encode()


_FIELD_NAME = re.compile(rb"^([^:\r\n]+):")
# Fields of a 304 that never replace the stored ones (framing, connection, our own).
_NOT_UPDATED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"age",
                          b"x-cache", b"content-encoding", b"content-type", b"content-range"})


def _merge_fields(stored: bytes, block_304: bytes) -> bytes:
    """The stored field lines with every field the 304 carries replaced by its value."""
    new: dict[bytes, list[bytes]] = {}
    for line in block_304.split(b"\r\n")[1:]:
        m = _FIELD_NAME.match(line)
        if m is not None:
            name = m.group(1).strip().lower()
            if name not in _NOT_UPDATED:
                new.setdefault(name, []).append(line + b"\r\n")
    kept = []
    for line in stored.split(b"\r\n"):
        m = _FIELD_NAME.match(line)
        if m is not None and m.group(1).strip().lower() not in new:
            kept.append(line + b"\r\n")
    return b"".join(kept) + b"".join(line for lines in new.values() for line in lines)


class NotModified(Reply):
    """A 304 answered from the store: no body and no Content-Length (RFC 9110 15.4.5)."""

    __slots__ = ()

    def encode(self, *, close: bool, head_request: bool = False) -> bytes:
        return b"HTTP/1.1 304 Not Modified\r\n" + self.fields + (b"Connection: close\r\n" if close else b"") + b"\r\n"


def _etag_matches(header: bytes, etag: bytes | None) -> bool:
    """If-None-Match against a stored ETag, weak comparison (RFC 9110 13.1.2)."""
    if etag is None:
        return False
    if header.strip() == b"*":
        return True
    mine = etag[2:] if etag.startswith(b"W/") else etag
    for tag in header.split(b","):
        tag = tag.strip()
        if (tag[2:] if tag.startswith(b"W/") else tag) == mine:
            return True
    return False


class Pending:
    """The first miss of a key on its way to the server, and the requests waiting for
    it. ``head`` is None when the first miss is another worker's (a shared store)."""

    __slots__ = ("head", "poll", "seen", "timer", "waiters")

    def __init__(self, head: object, seen: object) -> None:
        self.head = head
        # Our own first miss: its exchange (a poll sees it end without a response).
        # Another worker's: the key's version when the wait began (a poll sees it change).
        self.seen = seen
        self.waiters: list[tuple[FilterExchange, object]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.poll: asyncio.TimerHandle | None = None


class HttpCache(Filter):
    """``cache``: see the module docstring. ``clock``: epoch seconds (injected in tests)."""

    __slots__ = ("clock", "heuristic", "pending", "store", "x_cache")
    name = "cache"
    requests = True
    responses = True

    def __init__(self, cfg: Cache, store: CacheStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store if store is not None else CacheStore(cfg.size, cfg.max_object)
        self.heuristic = cfg.heuristic
        self.x_cache = cfg.x_cache
        self.clock = clock
        self.pending: dict[bytes, Pending] = {}

    # ------------------------------------------------------------- requests
    def on_request(self, ex: FilterExchange) -> Verdict:
        head = ex.head
        assert head is not None
        view = ex.view
        if head.upgrade:
            return Verdict.CONTINUE  # a WebSocket handshake (and the like) is the server's to answer
        key = cache_key(view.host, head.target)
        method = head.method
        store = self.store
        if method not in SAFE:
            store.invalidate(key)
            return Verdict.CONTINUE
        if method not in (b"GET", b"HEAD"):
            return Verdict.CONTINUE
        plain = _REQUEST_FIELDS.search(head.block) is None
        req_cc = {} if plain else directives(view.header(b"cache-control"))
        if not plain and request_wants_fresh(req_cc, view.header(b"pragma")):
            store.misses += 1
            return Verdict.CONTINUE
        if self._answer(ex, key, req_cc, plain):
            return Verdict.RESPOND
        down = getattr(ex, "down", None)
        if getattr(down, "revalidating", False):
            return Verdict.CONTINUE  # a background revalidation: not a client's miss, never collapsed
        if method == b"GET":
            # Request collapsing: the first miss asks the server, the others wait for it.
            loop = getattr(ex, "loop", None)
            if loop is not None and down is not None and down.req_ended and not head.upgrade:
                pending = self.pending.get(key)
                if pending is None:
                    if store.claim_fetch(key):  # no other worker is fetching it either
                        pending = self.pending[key] = Pending(head, ex)
                    else:  # another worker is: wait for what it stores (a poll of the store)
                        pending = self.pending[key] = Pending(None, store.version(key))
                    pending.timer = loop.call_later(LOCK_TIMEOUT, self._wake, key, pending.head)
                    pending.poll = loop.call_later(FETCH_POLL, self._poll, key, loop)
                if pending.head is not head:
                    pending.waiters.append((ex, head))
                    store.collapsed += 1
                    return Verdict.WAIT
        store.misses += 1
        return Verdict.CONTINUE

    def _variant(self, ex: FilterExchange, key: bytes) -> Entry | None:
        """The stored variant of ``key`` whose Vary fields match the request's."""
        variants = self.store.variants(key)
        if variants is None:
            return None
        view = ex.view
        for entry in reversed(variants):
            if all(view.header(name) == value for name, value in entry.vary):
                return entry
        return None

    def _answer(self, ex: FilterExchange, key: bytes, req_cc: dict[bytes, bytes | None], plain: bool = False) -> bool:
        """Set ``ex.reply`` from a fresh stored variant; False when there is none. A
        stale one with a validator makes the request to the server conditional
        (RFC 9111 4.3.1), unless the client's request is conditional itself."""
        store = self.store
        entry = self._variant(ex, key)
        if entry is None:
            return False
        view = ex.view
        now = self.clock()
        max_age = seconds(req_cc.get(b"max-age")) if b"max-age" in req_cc else None
        age = entry.age(now)
        if age >= entry.lifetime or (max_age is not None and age > max_age):
            head = ex.head
            if plain and head is not None and head.method == b"GET" and self._while_revalidate(ex, key, entry, age):
                return True
            if head is not None and head.method == b"GET" and not _conditional(ex):
                if entry.etag is not None:
                    ex.add_lines.append(b"If-None-Match: " + entry.etag + b"\r\n")
                elif entry.last_modified is not None:
                    ex.add_lines.append(b"If-Modified-Since: " + _format_date(entry.last_modified) + b"\r\n")
            return False
        store.hits += 1
        ex.cache_status = b"HIT"
        whole = int(age)
        if plain:  # no conditional, no Cache-Control: the entry's reply for this age
            replies = entry.replies
            if replies is None or replies[0] != whole:
                hit_line = b"X-Cache: HIT\r\n" if self.x_cache else b""
                replies = entry.replies = (whole, Reply(entry.status, entry.fields + b"Age: %d\r\n" % whole + hit_line,
                                                       entry.body))
            ex.reply = replies[1]
            return True
        age_line = b"Age: %d\r\n" % whole
        hit = b"X-Cache: HIT\r\n" if self.x_cache else b""
        inm = view.header(b"if-none-match")
        ims = http_date(view.header(b"if-modified-since")) if inm is None else None
        if (inm is not None and _etag_matches(inm, entry.etag)) or (
                ims is not None and entry.last_modified is not None and entry.last_modified <= ims):
            fields = b"".join(_NOT_MODIFIED_FIELDS.findall(entry.fields))
            ex.reply = NotModified(304, fields + age_line + hit, b"")
        else:
            ex.reply = Reply(entry.status, entry.fields + age_line + hit, entry.body)
        return True

    def _while_revalidate(self, ex: FilterExchange, key: bytes, entry: Entry, age: float) -> bool:
        """``stale-while-revalidate=N`` (RFC 5861): an entry stale for at most N seconds
        answers at once (``X-Cache: STALE``) while one background request refreshes it
        (pyvs/accel/revalidate.py). Not for the background request itself, and not when
        the entry forbids serving stale (must-revalidate, proxy-revalidate, s-maxage:
        RFC 9111 4.2.4)."""
        down = getattr(ex, "down", None)
        head = ex.head
        if down is None or getattr(down, "revalidating", False) or head is None or head.framing != NO_BODY:
            return False
        cc = directives(_joined(_CC, b"\r\n" + entry.fields))
        window = seconds(cc.get(b"stale-while-revalidate")) if b"stale-while-revalidate" in cc else None
        if window is None or age - entry.lifetime > window:
            return False
        if b"must-revalidate" in cc or b"proxy-revalidate" in cc or b"s-maxage" in cc:
            return False
        store = self.store
        if store.claim_fetch(key):  # else one is on its way already (in this worker or another)
            from pyvs.accel.revalidate import revalidate_in_background

            if entry.etag is not None:
                validator = b"If-None-Match: " + entry.etag + b"\r\n"
            elif entry.last_modified is not None:
                validator = b"If-Modified-Since: " + _format_date(entry.last_modified) + b"\r\n"
            else:
                validator = b""  # none: the full response replaces the entry
            revalidate_in_background(ex, validator, lambda: store.release_fetch(key))
        store.hits += 1
        ex.cache_status = b"STALE"
        xc = b"X-Cache: STALE\r\n" if self.x_cache else b""
        ex.reply = Reply(entry.status, entry.fields + b"Age: %d\r\n" % int(age) + xc, entry.body)
        return True

    def _wake(self, key: bytes, head: object) -> None:
        """The first request's response is stored (or will not be, or took too long):
        the waiting requests are answered from the store, else go to the server."""
        pending = self.pending.get(key)
        if pending is None or pending.head is not head:
            return
        del self.pending[key]
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.poll is not None:
            pending.poll.cancel()
        if head is not None:
            self.store.release_fetch(key)
        for ex, their_head in pending.waiters:
            if ex.head is not their_head:
                continue  # that client went away meanwhile
            req = ex.head
            assert req is not None
            req_cc = directives(ex.view.header(b"cache-control"))
            if self._answer(ex, key, req_cc, _REQUEST_FIELDS.search(req.block) is None):
                ex.reply_now()
            else:
                self.store.misses += 1
                ex.resume_request()

    def _poll(self, key: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """Requests waiting for a fetch. Our own: woken when its exchange ended without
        a response to store (an error, the client gone). Another worker's: answered
        once the key's stored variants change, sent on once it gave up (its claim is
        gone)."""
        pending = self.pending.get(key)
        if pending is None:
            return
        if pending.head is not None:
            if getattr(pending.seen, "head", None) is not pending.head:
                self._wake(key, pending.head)
                return
        elif self.store.version(key) != pending.seen or not self.store.fetching_elsewhere(key):
            self._wake(key, None)
            return
        pending.poll = loop.call_later(FETCH_POLL, self._poll, key, loop)

    # ------------------------------------------------------------ responses
    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        head = ex.head
        assert head is not None
        if head.upgrade:
            return Verdict.CONTINUE  # (never stored: see on_request)
        block = rh.block
        if head.method not in SAFE:
            if 200 <= rh.status < 400:
                self._invalidate_locations(ex, block)
        elif head.method == b"GET" and rh.status >= 200:
            key = cache_key(ex.view.host, head.target)
            if (rh.status == 304 and not _conditional(ex)) or rh.status >= 500:
                entry = self._variant(ex, key)
                if entry is not None and self._use_stored(ex, rh, key, entry):
                    self._wake(key, head)
                    return Verdict.CONTINUE
            if not self._maybe_store(ex, rh, block, key):
                self._wake(key, head)  # nothing will be stored: the waiters ask the server
        ex.cache_status = b"MISS"
        if self.x_cache:
            if rh.raw_ok:
                rh.block = strip_hop_fields(rh.block)
                rh.raw_ok = False
            rh.block += b"X-Cache: MISS\r\n"
        return Verdict.CONTINUE

    def _use_stored(self, ex: FilterExchange, rh: ResponseHead, key: bytes, entry: Entry) -> bool:
        """A 304 to the cache's own conditional request: refresh the stored head with
        the 304's fields (RFC 9111 4.3.4) and send the stored response. A 5xx while the
        entry allows ``stale-if-error`` (RFC 5861): send the stale response. Either way
        the server's answer is replaced (its head here, its body by a Replay stage)."""
        now = self.clock()
        if rh.status == 304:
            fields = _merge_fields(entry.fields, rh.block)
            block = b"\r\n" + fields
            resp_cc = directives(_joined(_CC, block))
            date = http_date(_first(_DATE, rh.block))
            fresh_for = lifetime(resp_cc, status=entry.status, date=date if date is not None else now,
                                 expires=_first(_EXPIRES, block), last_modified=entry.last_modified,
                                 heuristic=self.heuristic)
            if b"no-store" in resp_cc or b"private" in resp_cc:
                self.store.invalidate(key)
            else:
                entry = Entry(entry.status, fields, entry.body, entry.vary, request_time=now, response_time=now,
                              date=date, age_value=seconds(_first(_AGE, rh.block)) or 0.0, lifetime=fresh_for)
                self.store.put(key, entry)
            label = b"REVALIDATED"
        else:
            cc = directives(_joined(_CC, b"\r\n" + entry.fields))
            allowed = seconds(cc.get(b"stale-if-error")) if b"stale-if-error" in cc else None
            if allowed is None or b"must-revalidate" in cc or b"proxy-revalidate" in cc:
                return False
            if entry.age(now) - entry.lifetime > allowed:
                return False
            label = b"STALE"
        from pyvs.http.responses import REASONS

        age = b"Age: %d\r\n" % int(entry.age(now))
        xc = b"X-Cache: " + label + b"\r\n" if self.x_cache else b""
        rh.status = entry.status
        rh.block = b"HTTP/1.1 %d %s\r\n" % (entry.status, REASONS.get(entry.status, b"")) + entry.fields + age + xc
        rh.raw_ok = False
        ex.stage_body(Replay(entry.body))
        if not getattr(getattr(ex, "down", None), "revalidating", False):
            self.store.hits += 1
        ex.cache_status = label
        return True

    def _maybe_store(self, ex: FilterExchange, rh: ResponseHead, block: bytes, key: bytes) -> bool:
        """Record a storable response's body (a stage); False when it is not stored."""
        view = ex.view
        head = ex.head
        assert head is not None
        resp_cc = directives(_joined(_CC, block))
        req_cc = directives(view.header(b"cache-control"))
        vary = _joined(_VARY, block)
        names = tuple(n.strip().lower() for n in vary.split(b",") if n.strip()) if vary else ()
        now = self.clock()
        date = http_date(_first(_DATE, block))
        fresh_for = lifetime(resp_cc, status=rh.status, date=date if date is not None else now,
                             expires=_first(_EXPIRES, block), last_modified=http_date(_first(_LAST_MODIFIED, block)),
                             heuristic=self.heuristic)
        if not storable(head.method, rh.status, req_cc, resp_cc, authorization=view.header(b"authorization")
                        is not None, vary_star=b"*" in names, fresh_for=fresh_for):
            return False
        if rh.framing == LENGTH and rh.length > self.store.max_object:  # too large: not even recorded
            return False
        age_value = seconds(_first(_AGE, block)) or 0.0
        fields = _STRIP.sub(b"", drop_length(strip_hop_fields(block) if rh.raw_ok else block))
        fields = fields.split(b"\r\n", 1)[1] if b"\r\n" in fields else b""
        vary_values = tuple((n, view.header(n)) for n in names)
        started = getattr(ex, "started", None)
        loop = getattr(ex, "loop", None)
        delay = (loop.time() - started) if started is not None and loop is not None else 0.0
        store = self.store
        status = rh.status

        def finish(body: bytes) -> None:
            store.put(key, Entry(status, fields, body, vary_values, request_time=now - delay, response_time=now,
                                 date=date, age_value=age_value, lifetime=fresh_for))
            self._wake(key, head)

        ex.stage_body(Recorder(store.max_object, finish, lambda: self._wake(key, head)))
        return True

    def _invalidate_locations(self, ex: FilterExchange, block: bytes) -> None:
        view = ex.view
        host = view.host
        head = ex.head
        if head is not None:
            self.store.invalidate(cache_key(host, head.target))
        for pat in (_LOCATION, _CONTENT_LOCATION):
            loc = _first(pat, block)
            if not loc:
                continue
            if loc.startswith(b"/"):
                self.store.invalidate(cache_key(host, loc))
            elif b"://" in loc:
                rest = loc.split(b"://", 1)[1]
                loc_host, slash, path = rest.partition(b"/")
                if loc_host.lower() == host.lower():  # same host only (RFC 9111 4.4)
                    self.store.invalidate(cache_key(host, slash + path))

    def describe(self) -> str:
        return f"cache {self.store.limit} bytes, objects up to {self.store.max_object}"

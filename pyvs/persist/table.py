"""A stick table: session key -> server name, each entry expiring after ``timeout``
without use.

Theory of operation
-------------------
Sans-I/O: every call takes ``now`` (monotonic seconds); nothing here reads a clock.
The same class is the workers' local cache and the supervisor's authoritative
table.

Entries live in one ``dict`` in *stamp* order: an entry is (re)inserted at the end
when it is created and when a sweep finds it still alive. A hit only moves the
entry's ``expires`` forward -- a store, no reordering -- so the request path pays
one dict lookup. :meth:`expire` looks at the front of the dict only: an entry whose
``stamp + timeout`` has not passed yet cannot have expired, nor can anything behind
it, so the sweep stops there. An entry found alive at the front is moved to the end
with a fresh stamp; each entry is moved at most once per ``timeout``, so sweeping
costs O(1) amortised per entry and never scans the whole table.

``max_entries`` bounds memory: inserting into a full table evicts from the front
(the entry stamped longest ago, an approximation of least recently used).

``synced`` is bookkeeping for whoever mirrors the table elsewhere (a worker telling
the supervisor, the supervisor telling Redis): when the entry was last reported,
so that refreshing a busy entry costs one message per refresh interval, not one
per request.

Keys
----
Source keys are the network address in clear (``10.1.2.3``, ``10.1.2.0/24``,
``2001:db8:1:2::/64``): operators look them up. Header and parameter values are
often credentials (API tokens, session ids), so their keys are a keyed hash of the
value: the tables -- and Redis, when shared -- never hold the token itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator


class Entry:
    """One session: its server and its deadlines."""

    __slots__ = ("expires", "stamp", "synced", "value")

    def __init__(self, value: str, expires: float, stamp: float) -> None:
        self.value = value
        self.expires = expires
        self.stamp = stamp
        self.synced = stamp

    def __repr__(self) -> str:
        return f"Entry({self.value!r}, expires={self.expires:.3f})"


class StickTable:
    """Key -> server name with idle expiry and a size bound."""

    __slots__ = ("_d", "evictions", "expirations", "max_entries", "timeout")

    def __init__(self, timeout: float, max_entries: int = 1_000_000) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.timeout = timeout
        self.max_entries = max_entries
        self._d: dict[str, Entry] = {}
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: str) -> bool:
        return key in self._d

    def get(self, key: str, now: float) -> Entry | None:
        """The live entry for ``key`` (not refreshed), or None."""
        e = self._d.get(key)
        if e is None or e.expires <= now:
            return None
        return e

    def hit(self, key: str, now: float) -> Entry | None:
        """The live entry for ``key``, its idle timer restarted; None if absent or expired."""
        e = self._d.get(key)
        if e is None or e.expires <= now:
            return None
        e.expires = now + self.timeout
        return e

    def put(self, key: str, value: str, now: float, ttl: float | None = None) -> Entry:
        """Create or replace the entry for ``key``; it expires ``ttl`` (default ``timeout``) from now."""
        expires = now + (self.timeout if ttl is None else min(ttl, self.timeout))
        d = self._d
        e = d.get(key)
        if e is not None:
            e.value = value
            e.expires = expires
            return e
        if len(d) >= self.max_entries:
            self.expire(now)
            while len(d) >= self.max_entries:
                del d[next(iter(d))]
                self.evictions += 1
        e = d[key] = Entry(value, expires, now)
        return e

    def remove(self, key: str) -> None:
        self._d.pop(key, None)

    def expire(self, now: float, limit: int = 0) -> int:
        """Drop expired entries; returns how many. ``limit`` > 0 bounds the work done
        (entries looked at) so a huge table never stalls the event loop."""
        d = self._d
        timeout = self.timeout
        dropped = looked = 0
        while d:
            key = next(iter(d))
            e = d[key]
            if e.stamp + timeout > now:
                break  # stamped recently: neither it nor anything behind it can be stale
            del d[key]
            if e.expires > now:
                e.stamp = now
                d[key] = e  # alive: move it behind the others
            else:
                dropped += 1
            looked += 1
            if limit and looked >= limit:
                break
        self.expirations += dropped
        return dropped

    def items(self, now: float) -> Iterator[tuple[str, Entry]]:
        """Live entries (a snapshot: safe to modify the table while iterating)."""
        for key, e in list(self._d.items()):
            if e.expires > now:
                yield key, e

    def clear(self) -> None:
        self._d.clear()


# ---------------------------------------------------------------- keys

MAX_KEY_INPUT = 4096  # longer header/param values are not session keys: ignored


def source_key(ip: str, v4_prefix: int = 32, v6_prefix: int = 64) -> str | None:
    """The stick-table key of a client address, or None if it is not an IP address.

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, seen on a dual-stack listener)
    count as IPv4, so one client has one key however it connects.
    """
    if not ip:
        return None
    if ":" in ip:
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
        else:
            try:
                n = int(ipaddress.IPv6Address(ip))
            except ValueError:
                return None
            shift = 128 - v6_prefix
            return f"{ipaddress.IPv6Address(n >> shift << shift)}/{v6_prefix}"
    if v4_prefix == 32:
        return ip
    try:
        n = int(ipaddress.IPv4Address(ip))
    except ValueError:
        return None
    shift = 32 - v4_prefix
    return f"{ipaddress.IPv4Address(n >> shift << shift)}/{v4_prefix}"


def value_key(value: bytes) -> str | None:
    """The stick-table key of a header or parameter value (a hash); None when empty or huge."""
    if not value or len(value) > MAX_KEY_INPUT:
        return None
    return hashlib.blake2b(value, digest_size=12, person=b"pyvs-stick").hexdigest()


def header_pattern(name: str) -> re.Pattern[bytes]:
    """Finds the first ``name:`` field of a head block; group 1 is its value (with any
    trailing blanks: a lazy group before ``[ \t]*`` would backtrack quadratically)."""
    return re.compile(rb"\r\n(?i:" + re.escape(name.encode()) + rb"):[ \t]*([^\r\n]*)")


def header_value(block: bytes, pattern: re.Pattern[bytes]) -> bytes | None:
    m = pattern.search(block)
    return m.group(1).rstrip(b" \t") if m is not None else None


def query_param(target: bytes, name: bytes) -> bytes | None:
    """The first value of query parameter ``name`` in a request target (not decoded:
    the same token always gives the same bytes)."""
    q = target.find(b"?")
    if q < 0:
        return None
    query = target[q + 1 :]
    frag = query.find(b"#")
    if frag >= 0:
        query = query[:frag]
    prefix = name + b"="
    for part in query.split(b"&"):
        if part.startswith(prefix):
            return part[len(prefix) :]
    return None

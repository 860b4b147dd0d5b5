"""The request facts that routing conditions and filters read, computed on first use.

Theory of operation
-------------------
A :class:`RequestView` belongs to one exchange and is reset for every request. It
never copies the head: the path, the query, a header's value, a cookie are found in
``head.target`` / ``head.block`` only when a condition or filter asks, and kept
for the rest of the request. A route table that reads only Host and path therefore
costs no header search at all.

Header lookups use one compiled pattern per field name, built the first time that
name is asked for (names come from the configuration, so the cache is bounded by it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvs.http.h1 import RequestHead

_FIELD_PATTERNS: dict[bytes, re.Pattern[bytes]] = {}


def field_pattern(name: bytes) -> re.Pattern[bytes]:
    """The pattern that finds every value of field ``name`` (any case) in a head block."""
    key = name.lower()
    pat = _FIELD_PATTERNS.get(key)
    if pat is None:
        pat = _FIELD_PATTERNS[key] = re.compile(
            rb"\r\n" + re.escape(key) + rb"[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
        )
    return pat


def normalise_host(host: bytes | None) -> bytes:
    """Lower case, no port, no trailing dot: ``WWW.Example.COM.:8080`` -> ``www.example.com``."""
    if not host:
        return b""
    host = host.lower()
    if host.startswith(b"["):
        return host.split(b"]", 1)[0] + b"]"
    host = host.split(b":", 1)[0]
    return host[:-1] if host.endswith(b".") else host


class RequestView:
    """Lazily computed facts of the request in progress (see the module docstring)."""

    __slots__ = ("_cookies", "_host", "_path", "_query", "client_ip", "head", "local_ip", "scheme")

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.client_ip = b""  # after trusted-proxy / PROXY protocol handling
        self.local_ip = b""  # the address the connection arrived on
        self.scheme = b"http"
        self._host: bytes | None = None
        self._path: bytes | None = None
        self._query: bytes | None = None
        self._cookies: dict[bytes, bytes] | None = None

    def reset(self, head: RequestHead) -> None:
        """A new request on the same connection (client and local address stay)."""
        self.head = head
        self._host = None
        self._path = None
        self._query = None
        self._cookies = None

    @property
    def host(self) -> bytes:
        """The normalised Host (for an absolute-form target, its authority)."""
        h = self._host
        if h is None:
            assert self.head is not None
            h = self._host = normalise_host(self.head.host)
        return h

    def _split(self) -> None:
        assert self.head is not None
        target = self.head.target
        if not target.startswith(b"/") and b"://" in target:
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        path, _, query = target.partition(b"?")
        self._path = path
        self._query = query

    @property
    def path(self) -> bytes:
        """The target's path, without the query (``/a/b?x=1`` -> ``/a/b``)."""
        if self._path is None:
            self._split()
        assert self._path is not None
        return self._path

    @property
    def query(self) -> bytes:
        """The raw query string without ``?`` (empty when absent)."""
        if self._query is None:
            self._split()
        assert self._query is not None
        return self._query

    def header(self, name: bytes) -> bytes | None:
        """Every value of field ``name`` joined by ``, `` (RFC 9110 5.3), or None."""
        assert self.head is not None
        values: list[bytes] = field_pattern(name).findall(self.head.block)
        if not values:
            return None
        # Trailing blanks are cut here, not by the pattern: a lazy group before
        # "[ \t]*" backtracks quadratically on a long value full of blanks.
        if len(values) == 1:
            return values[0].rstrip(b" \t")
        return b", ".join(v.rstrip(b" \t") for v in values)

    def query_param(self, name: bytes) -> bytes | None:
        """The first value of query parameter ``name`` (raw, not percent-decoded)."""
        q = self.query
        if not q:
            return None
        for part in q.split(b"&"):
            k, _, v = part.partition(b"=")
            if k == name:
                return v
        return None

    def cookie(self, name: bytes) -> bytes | None:
        """The value of cookie ``name`` from the Cookie field(s), or None."""
        jar = self._cookies
        if jar is None:
            jar = self._cookies = {}
            raw = self.header(b"cookie")
            if raw:
                for part in raw.replace(b",", b";").split(b";"):
                    k, eq, v = part.strip().partition(b"=")
                    if eq and k not in jar:
                        jar[k] = v.strip()
        return jar.get(name)

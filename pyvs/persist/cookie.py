"""Cookie persistence as bytes in, bytes out: server ids, the cookie value with its
dates, and the edits to request and response heads (HAProxy's ``cookie`` semantics).

Theory of operation
-------------------
The client carries its server in a cookie, so nothing needs to be shared between
workers or nodes: every pyvs that has the same backend and server names computes
the same ids. An id is a keyed hash of the backend and server *names* -- opaque,
stable across restarts and address changes, and it never reveals an internal
address.

Three modes, as in HAProxy:

``insert``
    pyvs sets ``NAME=ID`` (``NAME=ID|LAST|FIRST`` when ``maxidle`` or ``maxlife`` is
    configured; the dates are base-36 Unix seconds). With ``indirect`` the cookie is
    removed from requests, so servers never see it. A ``Set-Cookie`` for ``NAME``
    sent by a server is removed: the cookie is pyvs's.
``rewrite``
    The server sets ``NAME`` itself (any value); pyvs replaces the value with the id.
``prefix``
    The server sets an application cookie (``JSESSIONID=abc``); clients get
    ``JSESSIONID=ID~abc`` and servers get back ``JSESSIONID=abc``.

Dates are not signed (neither are HAProxy's): they end sessions of well-behaved
clients; a client that forges them only chooses its own server, which it could do
anyway by sending a valid id. A cookie dated more than a day in the future is
treated as invalid.

Sans-I/O: the caller passes wall-clock ``now`` (Unix seconds); nothing here reads a
clock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_COOKIE_LINE = re.compile(rb"\r\n(?i:cookie):[ \t]*([^\r\n]*)")
_CACHE_CONTROL = re.compile(rb"\r\n(?i:cache-control):([^\r\n]*)")
_NO_STORE = re.compile(rb"(?i)\b(?:private|no-cache|no-store)\b")
FUTURE_SLACK = 86400  # seconds a cookie date may lie ahead of our clock


def server_id(backend: str, server: str) -> str:
    """The opaque, stable id of ``server`` in ``backend`` (12 hex digits)."""
    return hashlib.blake2b(f"{backend}\0{server}".encode(), digest_size=6, person=b"pyvs-cookie").hexdigest()


def b36(n: int) -> str:
    if n <= 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


class CookieValue(NamedTuple):
    """A decoded ``insert`` cookie: the server id and, when dated, its two dates.
    (A NamedTuple: built on every request that carries a cookie, so it must be cheap.)"""

    sid: str
    last: int = 0  # last time the cookie was (re)issued, Unix seconds; 0 = undated
    first: int = 0  # when the session began


def decode(value: bytes) -> CookieValue | None:
    """``ID`` or ``ID|LAST|FIRST`` -> CookieValue; None when malformed."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if "|" not in text:
        return CookieValue(text) if text else None
    parts = text.split("|")
    if not parts[0] or len(parts) != 3:
        return None
    try:
        return CookieValue(parts[0], int(parts[1], 36), int(parts[2], 36))
    except ValueError:
        return None


def encode(v: CookieValue) -> str:
    return f"{v.sid}|{b36(v.last)}|{b36(v.first)}" if v.first else v.sid


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """Everything a cookie backend needs, derived once from the config."""

    name: str
    mode: str = "insert"  # insert | rewrite | prefix
    indirect: bool = True
    nocache: bool = False
    httponly: bool = False
    secure: bool = False
    samesite: str | None = None
    domain: str | None = None
    maxidle: float = 0.0
    maxlife: float = 0.0


class CookieCodec:
    """Finds, checks, strips and writes one backend's persistence cookie."""

    def __init__(self, spec: CookieSpec) -> None:
        self.spec = spec
        self.mode = spec.mode
        self.name = spec.name.encode()
        self.name_eq = self.name + b"="
        self.dated = bool(spec.maxidle or spec.maxlife)
        # Re-issue a dated cookie when its "last" date lags this much behind: a quarter
        # of maxidle (so idle sessions end between 3/4 maxidle and maxidle), at least 1 s.
        self.refresh_after = max(1, int(spec.maxidle / 4)) if spec.maxidle else 0
        attrs = "; path=/"
        if spec.domain:
            attrs += f"; domain={spec.domain}"
        if spec.samesite:
            attrs += f"; SameSite={spec.samesite.capitalize()}"
        if spec.secure:
            attrs += "; Secure"
        if spec.httponly:
            attrs += "; HttpOnly"
        self.attrs = attrs.encode()
        self.set_cookie_re = re.compile(rb"\r\n(?i:set-cookie):[ \t]*" + re.escape(self.name) + rb"=([^;\r\n]*)")

    # ---------------------------------------------------------------- request
    def from_request(self, block: bytes) -> tuple[bytes | None, bytes]:
        """The value of our cookie in a request head (first one wins), and the head to
        forward: without the cookie (insert + indirect), with the id prefix removed
        (prefix), or unchanged."""
        name_eq = self.name_eq
        if name_eq not in block:
            return None, block  # the common case for a first visit: one substring search
        fast = self._one_line(block)
        if fast is not None:
            return fast
        found: bytes | None = None
        edits: list[tuple[int, int, bytes]] = []
        for m in _COOKIE_LINE.finditer(block):
            pairs = m.group(1).split(b";")
            kept: list[bytes] = []
            changed = False
            for pair in pairs:
                name, eq, value = pair.strip().partition(b"=")
                if name != self.name or not eq:
                    kept.append(pair.strip())
                    continue
                value = value.strip().strip(b'"')
                if self.mode == "prefix":
                    sid, tilde, rest = value.partition(b"~")
                    if found is None and tilde:
                        found = sid
                    if tilde:
                        changed = True
                        kept.append(name + b"=" + rest)
                    else:
                        kept.append(pair.strip())
                    continue
                if found is None:
                    found = value
                if self.mode == "insert" and self.spec.indirect:
                    changed = True
                else:
                    kept.append(pair.strip())
            if changed:
                line = b"\r\nCookie: " + b"; ".join(p for p in kept if p) if any(kept) else b""
                edits.append((m.start(), m.end(), line))
        if edits:
            out = []
            pos = 0
            for start, end, line in edits:
                out.append(block[pos:start])
                out.append(line)
                pos = end
            out.append(block[pos:])
            block = b"".join(out)
        return found, block

    def _one_line(self, block: bytes) -> tuple[bytes | None, bytes] | None:
        """:meth:`from_request` for what browsers and curl send -- one ``Cookie: ``
        line holding our cookie once, unquoted, in ``insert`` or ``rewrite`` mode --
        with plain bytes operations; None sends anything else to the general path."""
        if self.mode == "prefix":
            return None
        start = block.find(b"\r\nCookie: ")
        if start < 0 or block.lower().count(b"\r\ncookie:") != 1:
            return None
        start += 10
        eol = block.find(b"\r\n", start)
        line = block[start:eol]
        name_eq = self.name_eq
        if line.startswith(name_eq):
            pos = 0
        else:
            pos = line.find(b"; " + name_eq)
            if pos < 0:
                return None
            pos += 2
        end = line.find(b";", pos)
        if end < 0:
            end = len(line)
        value = line[pos + len(name_eq) : end]
        if b'"' in value or b" " in value or line.find(name_eq, end) >= 0:
            return None
        if self.mode != "insert" or not self.spec.indirect:
            return value, block
        if pos:
            rest = line[: pos - 2] + line[end:]
        else:
            rest = line[end + 1 :].lstrip(b" ")
        if rest:
            return value, block[:start] + rest + block[eol:]
        return value, block[: start - 10] + block[eol:]

    def check(self, value: bytes, now: float) -> CookieValue | None:
        """Decode a request cookie and apply maxidle / maxlife; None if it must not stick."""
        if self.mode != "insert":
            try:
                return CookieValue(value.decode("ascii")) if value else None
            except UnicodeDecodeError:
                return None
        v = decode(value)
        if v is None:
            return None
        if not self.dated:
            return CookieValue(v.sid) if v.first else v  # dates from an older config are ignored
        if not v.first:
            return None  # undated cookie while dates are required: start a new session
        t = int(now)
        if v.last > t + FUTURE_SLACK or v.first > t + FUTURE_SLACK or v.first > v.last:
            return None
        if self.spec.maxidle and t - v.last > self.spec.maxidle:
            return None
        if self.spec.maxlife and t - v.first > self.spec.maxlife:
            return None
        return v

    def needs_refresh(self, v: CookieValue, now: float) -> bool:
        """Whether a valid dated cookie should be re-issued with a fresh ``last`` date."""
        return bool(self.refresh_after) and int(now) - v.last >= self.refresh_after

    # --------------------------------------------------------------- response
    def set_cookie(self, sid: str, now: float, first: int = 0) -> bytes:
        """The ``Set-Cookie`` line (with CRLF) that sticks the client to ``sid``."""
        if self.dated:
            t = int(now)
            value = encode(CookieValue(sid, t, first or t))
        else:
            value = sid
        return b"Set-Cookie: " + self.name_eq + value.encode() + self.attrs + b"\r\n"

    def server_cookies(self, block: bytes) -> bool:
        """Whether the response head sets our cookie itself (cheap pre-check first)."""
        return self.name_eq in block and self.set_cookie_re.search(block) is not None

    def edit_response(self, block: bytes, sid: str) -> bytes:
        """Apply the mode to the server's own ``Set-Cookie: NAME=`` lines: removed
        (insert), value replaced by the id (rewrite), or prefixed with ``ID~`` (prefix)."""
        if self.mode == "insert":
            return _drop_lines(block, self.set_cookie_re)
        sid_b = sid.encode()

        def sub(m: re.Match[bytes]) -> bytes:
            value = m.group(1)
            if self.mode == "rewrite":
                new = sid_b
            elif not value or value == b'""':
                return m.group(0)  # a deletion stays a deletion
            else:
                new = sid_b + b"~" + value
            return m.group(0)[: m.start(1) - m.start(0)] + new

        return self.set_cookie_re.sub(sub, block)


def _drop_lines(block: bytes, pattern: re.Pattern[bytes]) -> bytes:
    """Remove every whole field line whose start matches ``pattern``."""
    out = []
    pos = 0
    for m in pattern.finditer(block):
        end = block.find(b"\r\n", m.end())
        if end < 0:
            end = len(block)
        out.append(block[pos : m.start()])
        pos = end
    if not out:
        return block
    out.append(block[pos:])
    return b"".join(out)


def private_cache(block: bytes) -> bytes:
    """``nocache``: a response that sets a persistence cookie must not be stored by a
    shared cache. Existing ``private``/``no-cache``/``no-store`` directives are kept;
    any other ``Cache-Control`` is replaced by ``private``."""
    lines = list(_CACHE_CONTROL.finditer(block))
    if any(_NO_STORE.search(m.group(1)) for m in lines):
        return block
    if lines:
        block = _drop_lines(block, _CACHE_CONTROL)
    return block + b"Cache-Control: private\r\n"

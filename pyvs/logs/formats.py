"""Access-log line formats: ECS JSON and the classic combined format.

A request leaves a *record* (a plain tuple, built in :meth:`Observer.ended`); lines
are made from records when a batch is flushed, off the request's own time. Field
names of the ECS format follow the Elastic Common Schema (``client.ip``,
``http.request.method``, ``url.path``, ``http.response.status_code``,
``event.duration`` in nanoseconds, ...) as nested objects, plus pyvs's own under
``pyvs.*``; absent values are left out, as ECS asks. docs/logging.md lists them all.

Strings are bytes from the wire: they are written as they are when they need no JSON
escaping, else escaped, with bytes that are not UTF-8 replaced. The common request -- a
head with no byte that needs escaping (a few ``memchr`` tests of the whole head), no
TLS, request id or unusual end -- is written by one ``%`` formatting
(:meth:`EcsFormat.line`); every other by :meth:`EcsFormat._line`, and a unit test holds
the two to the same output. Formatting costs about 1.3 us of CPU per ordinary line; made
per batch, it never delays the response it describes.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Final

from pyvs.l7.request import field_pattern

if TYPE_CHECKING:
    from pyvs.http.h1 import RequestHead, ResponseHead

# Record layout: a tuple, for the cost of building it on the request path. Objects are
# kept as they are (the route's runtime, the backend, the server, the TLS facts) and
# their names looked up when the line is made; route, backend, server and attempts
# mean nothing when HEAD is None (a head that could not be parsed).
END: Final = 0  # loop time the request ended
STATUS: Final = 1
DUR: Final = 2  # seconds
CLIENT: Final = 3  # bytes
HEAD: Final = 4  # RequestHead | None
ROUTE: Final = 5  # RouteRuntime (.name, .vhost) | None
BACKEND: Final = 6  # BackendRuntime (.name) | None
SERVER: Final = 7  # ServerState (.name) | None
ATTEMPTS: Final = 8  # servers tried (retries + 1), 0 when none
RBYTES: Final = 9  # response bytes, head included
RHEAD: Final = 10  # ResponseHead | None
RID: Final = 11  # bytes, b"" when no header asked for a request id
TERM: Final = 12  # str, "" for an ordinary end
TLS: Final = 13  # TlsFacts (.version: b"TLSv1.3") | None
QUEUE: Final = 14  # seconds waited for a server slot (the HTTP queue), 0.0 when none
CACHE: Final = 15  # what the cache did: b"HIT", b"MISS", b"REVALIDATED", b"STALE"; b"" when no cache
UPSTREAM: Final = 16  # seconds from the request sent to its server to the response head; -1.0 when none
Record = tuple[float, int, float, bytes, "RequestHead | None", Any, Any, Any, int, int, "ResponseHead | None", bytes,
               str, Any, float, bytes, float]

_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_CT = field_pattern(b"content-type")


def esc(value: bytes) -> bytes:
    """``value`` as the inside of a JSON string."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return json.dumps(value.decode("utf-8", "replace")).encode()[1:-1]


def esc_str(value: str) -> bytes:
    return json.dumps(value).encode()[1:-1]


def ua_referer(head: RequestHead) -> tuple[bytes | None, bytes | None]:
    """The first User-Agent and Referer of the head (no space may precede a field's
    colon, RFC 9112 5.1: the parser refuses such a head)."""
    block = head.block
    low = block.lower()
    return _field(block, low, b"\r\nuser-agent:"), _field(block, low, b"\r\nreferer:")


def _field(block: bytes, low: bytes, name: bytes) -> bytes | None:
    i = low.find(name)
    if i < 0:
        return None
    i += len(name)
    end = low.find(b"\r", i)
    return block[i : end if end >= 0 else len(block)].strip(b" \t")


def content_type(rh: ResponseHead | None) -> bytes | None:
    if rh is None:
        return None
    m = _CT.search(rh.block)
    return m.group(1).rstrip(b" \t") if m is not None else None


def body_bytes(rec: Record) -> int:
    """Body bytes of the response: what was forwarded less the head."""
    n = rec[RBYTES]
    rh = rec[RHEAD]
    if rh is not None:
        n -= len(rh.block) + 2
    return n if n > 0 else 0


class Clock:
    """Wall-clock text for loop times: the second's text made once per second, the
    millisecond's once per millisecond (lines of one batch mostly share them)."""

    def __init__(self) -> None:
        self.offset = 0.0  # wall - loop, set per batch
        self._sec = -1
        self._iso = b""
        self._clf = b""
        self._ms = -1
        self._iso_ms = b""

    def sync(self, loop_now: float) -> None:
        self.offset = time.time() - loop_now

    def _set(self, sec: int) -> None:
        self._sec = sec
        tm = time.gmtime(sec)
        self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", tm).encode()
        self._clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", tm).encode()

    def iso(self, loop_t: float) -> bytes:
        ms = int((loop_t + self.offset) * 1000)
        if ms != self._ms:
            sec = ms // 1000
            if sec != self._sec:
                self._set(sec)
            self._ms = ms
            self._iso_ms = self._iso + b".%03dZ" % (ms - sec * 1000)
        return self._iso_ms

    def clf(self, loop_t: float) -> bytes:
        sec = int(loop_t + self.offset)
        if sec != self._sec:
            self._set(sec)
        return self._clf


def _plain(block: bytes) -> bool:
    """No byte of the head needs JSON escaping (CR and LF end its lines and are never
    inside a field; the parser admits no other control byte but HTAB): then no field
    taken from it needs escaping, and a few C-level tests replace one search per field."""
    # int needles: a memchr each (a bytes needle costs a buffer export per test); " \\ HT DEL
    return block.isascii() and 34 not in block and 92 not in block and 9 not in block and 127 not in block


_LINE = (b'{"@timestamp":"%s","event":{"dataset":"pyvs.access","duration":%d},"client":{"ip":"%s"},'
         b'"http":{%s"response":{"status_code":%d,"body":{"bytes":%d}}}%s,%s,"retries":%d%s}}\n')
_REQUEST = b'"version":"%s","request":{"method":"%s"%s},'
_FAST = (b'{"@timestamp":"%s","event":{"dataset":"pyvs.access","duration":%d},"client":{"ip":"%s"},'
         b'"http":{"version":"%s","request":{"method":"%s"%s},"response":{"status_code":%d,"body":{"bytes":%d}}},'
         b'"url":{"path":"%s"%s%s}%s,%s,"retries":%d%s}}\n')
_URL = b',"url":{"path":"%s"%s%s}%s'


class EcsFormat:
    """One JSON object per line (Elastic Common Schema)."""

    def __init__(self, listener: str) -> None:
        # made in the worker: its pid is the line's process.pid
        self.pyvs_head = b'"process":{"pid":%d},"pyvs":{"listener":"%s"' % (os.getpid(), esc_str(listener))
        # The pyvs.* names of a request (vhost, route, backend, server) come from the
        # config: their JSON text is made once per combination of those objects.
        self._names: dict[tuple[int, int, int], tuple[bytes, Any, Any, Any]] = {}

    def _names_text(self, rt: Any, backend: Any, server: Any) -> bytes:
        # Keyed by identity (a RouteRuntime is an unhashable dataclass); the entry holds
        # the objects, so an id cannot be reused while it is cached.
        key = (id(rt), id(backend), id(server))
        hit = self._names.get(key)
        if hit is not None:
            return hit[0]
        parts = [self.pyvs_head]
        for name, v in ((b"vhost", rt.vhost if rt is not None else None),
                        (b"route", rt.name if rt is not None else None),
                        (b"backend", backend.name if backend is not None else None),
                        (b"server", server.name if server is not None else None)):
            if v is not None:
                parts += (b',"', name, b'":"', esc_str(v), b'"')
        text = b"".join(parts)
        if len(self._names) < 10000:
            self._names[key] = (text, rt, backend, server)
        return text

    def line(self, rec: Record, clock: Clock) -> bytes:
        """The line of ``rec``: the common request (a head that needs no escaping, no TLS,
        request id, termination, queue wait or cache status) in one formatting, anything
        else in :meth:`_line`."""
        head = rec[HEAD]
        if head is None or rec[TLS] is not None or rec[RID] or rec[TERM] or rec[QUEUE] or rec[CACHE]:
            return self._line(rec, clock)
        block = head.block
        # int needles: a memchr each (a bytes needle costs a buffer export per test); " \\ HT DEL
        if not block.isascii() or 34 in block or 92 in block or 9 in block or 127 in block:
            return self._line(rec, clock)
        low = block.lower()
        i = low.find(b"\r\nuser-agent:")
        if i < 0:
            ua = b""
        else:
            j = low.find(b"\r", i + 13)
            ua = b',"user_agent":{"original":"' + block[i + 13 : j if j >= 0 else len(block)].strip(b" ") + b'"}'
        i = low.find(b"\r\nreferer:")
        if i < 0:
            ref = b""
        else:
            j = low.find(b"\r", i + 10)
            ref = b',"referrer":"' + block[i + 10 : j if j >= 0 else len(block)].strip(b" ") + b'"'
        target = head.target
        q = target.find(b"?")
        host = head.host
        rh = rec[RHEAD]
        nbytes = rec[RBYTES] - (len(rh.block) + 2 if rh is not None else 0)
        attempts = rec[ATTEMPTS]
        return _FAST % (
            clock.iso(rec[END]), rec[DUR] * 1e9, rec[CLIENT], head.version, head.method, ref, rec[STATUS],
            nbytes if nbytes > 0 else 0, target if q < 0 else target[:q],
            b',"query":"' + target[q + 1 :] + b'"' if q >= 0 else b"",
            b',"domain":"' + (host.rsplit(b":", 1)[0] if host[-1] != 93 else host) + b'"' if host else b"",  # 93: "]"
            ua, self._names_text(rec[ROUTE], rec[BACKEND], rec[SERVER]), attempts - 1 if attempts > 1 else 0,
            _upstream(rec),
        )

    def _line(self, rec: Record, clock: Clock) -> bytes:
        head = rec[HEAD]
        request = url = extra = b""
        retries = 0
        if head is not None:
            block = head.block
            e = _same if _plain(block) else esc
            low = block.lower()
            ua = _field(block, low, b"\r\nuser-agent:")
            ref = _field(block, low, b"\r\nreferer:")
            path, q, query = head.target.partition(b"?")
            host = head.host
            request = _REQUEST % (head.version, e(head.method),
                                  b',"referrer":"' + e(ref) + b'"' if ref is not None else b"")
            url = _URL % (e(path), b',"query":"' + e(query) + b'"' if q else b"",
                          b',"domain":"' + e(host.rsplit(b":", 1)[0] if host[-1] != 93 else host) + b'"'  # 93: "]"
                          if host else b"",
                          b',"user_agent":{"original":"' + e(ua) + b'"}' if ua is not None else b"")
            names = self._names_text(rec[ROUTE], rec[BACKEND], rec[SERVER])
            attempts = rec[ATTEMPTS]
            if attempts > 1:
                retries = attempts - 1
        else:
            names = self._names_text(None, None, None)
        tls = rec[TLS]
        if tls is not None:  # b"TLSv1.3" -> ECS tls.version "1.3", tls.version_protocol "tls"
            url += b',"tls":{"version":"%s","version_protocol":"tls"}' % esc(tls.version.removeprefix(b"TLSv"))
        if rec[RID]:
            extra = b',"request_id":"%s"' % esc(rec[RID])
        if rec[TERM]:
            extra += b',"termination":"%s"' % rec[TERM].encode()
        extra += _upstream(rec)
        if rec[QUEUE]:  # nanoseconds, as event.duration
            extra += b',"queue":{"duration":%d}' % (rec[QUEUE] * 1e9)
        if rec[CACHE]:
            extra += b',"cache":"%s"' % rec[CACHE]
        return _LINE % (clock.iso(rec[END]), rec[DUR] * 1e9, rec[CLIENT], request, rec[STATUS], body_bytes(rec), url,
                        names, retries, extra)


def _upstream(rec: Record) -> bytes:
    """``,"upstream":{"duration":NS}`` (HAProxy's Tr: request sent to response head), or
    nothing when no server answered."""
    up = rec[UPSTREAM]
    return b',"upstream":{"duration":%d}' % (up * 1e9) if up >= 0.0 else b""


def _same(value: bytes) -> bytes:
    return value


class CombinedFormat:
    """nginx's and Apache's ``combined``: what every log tool already parses."""

    def __init__(self, listener: str) -> None:
        self.listener = listener

    def line(self, rec: Record, clock: Clock) -> bytes:
        head = rec[HEAD]
        if head is not None:
            ua, ref = ua_referer(head)
            req = b"%s %s HTTP/%s" % (head.method, head.target, head.version)
        else:
            ua = ref = None
            req = b"-"
        return b'%s - - [%s] "%s" %d %d "%s" "%s"\n' % (
            rec[CLIENT] or b"-", clock.clf(rec[END]), _quote(req), rec[STATUS], body_bytes(rec),
            _quote(ref) if ref else b"-", _quote(ua) if ua else b"-",
        )


def _quote(value: bytes) -> bytes:
    """As nginx escapes a variable in a log line: ``"``, ``\\``, control and non-ASCII bytes
    as ``\\xHH``."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return _NEEDS_ESCAPE.sub(lambda m: b"\\x%02X" % m[0][0], value)


def make_format(name: str, listener: str) -> Any:
    return EcsFormat(listener) if name == "ecs" else CombinedFormat(listener)

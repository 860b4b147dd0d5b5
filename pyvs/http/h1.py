"""HTTP/1.1 message heads: strict validation, and the few fields a proxy acts on.

Theory of operation
-------------------
A proxy needs very little from a head: the request line, Host, the framing
(Content-Length / Transfer-Encoding), the hop-by-hop fields it must drop, and the
forwarding fields it rewrites. Everything else passes through untouched, so a head
is handled as one ``bytes`` block that the caller cut at the first empty line:

1. the C scanner (:mod:`pyvs.http._scan`, optional) reads a plain head in one call:
   HTTP/1.1, nothing to strip or rewrite, no framing beyond one Content-Length. It
   refuses everything else, including anything it does not fully understand;
2. a refused head goes to llhttp (httptools), which does the strict checks in C --
   request-line and field syntax, obs-fold, conflicting Content-Length,
   Content-Length with Transfer-Encoding -- and calls ``on_header`` of the head
   object once per field; a dict lookup by exact spelling skips the fields pyvs
   does not act on;
3. when a head has hop-by-hop or forwarding fields, one regular expression pass
   (``sub``) removes them.

The result carries ``block``: the head re-usable as-is for forwarding (start line
and end-to-end fields, without the final blank line), so in the common case a
request head is forwarded as ``block + added fields + CRLF`` and a response head is
forwarded byte for byte. Whichever way a head went, the result is the same (the
tests compare both paths).

Bodies are framed by :mod:`pyvs.http.framing`; this module only decides which framing
applies (RFC 9112 section 6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Final

import httptools

from pyvs.http.errors import ProtocolError

# The optional C scanner (pyvs/http/_scan.c): one call for a plain head, None for
# anything it does not fully understand, which llhttp then validates. Absent when
# the install had no C compiler; PYVS_NO_EXTENSIONS=1 turns it off (to compare).
# It builds the head objects itself from templates given at the end of this module.
_scanner: ModuleType | None = None
if not os.environ.get("PYVS_NO_EXTENSIONS"):
    try:
        from pyvs.http import _scan as _scanner
    except ImportError:  # pragma: no cover - depends on the install
        pass

# Framing kinds (RFC 9112 6.3)
NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_CLOSE: Final = 3

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Whole field lines removed before forwarding (the leading CRLF belongs to the line).
_HOP = rb"connection|keep-alive|te|trailer|transfer-encoding|upgrade|proxy-" + _TOKEN
_STRIP_REQ = re.compile(
    rb"\r\n(?:" + _HOP + rb"|x-forwarded-for|x-forwarded-proto|x-forwarded-host|forwarded):[^\r\n]*(?=\r\n)",
    re.IGNORECASE,
)
_STRIP_RESP = re.compile(rb"\r\n(?:" + _HOP + rb"):[^\r\n]*(?=\r\n)", re.IGNORECASE)
# A Host value (RFC 9110 7.2: uri-host [":" port]): an IP literal in brackets or a
# reg-name (unreserved, pct-encoded, sub-delims), then an optional port. Empty is valid.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(?::[0-9]*)?")
# Connection tokens that are not field names to strip. A Connection header naming a
# framing field or Host must not make the proxy drop it: the message would be
# forwarded with a body the server cannot delimit (request smuggling).
_CONN_KNOWN = frozenset({b"close", b"keep-alive", b"upgrade", b"content-length", b"transfer-encoding", b"host"})

# Field names pyvs acts on, by lower-cased name. Codes below.
_F_HOST, _F_CL, _F_TE, _F_CONN, _F_UPGRADE, _F_EXPECT, _F_HOP, _F_XFF, _F_XFP, _F_XFH, _F_FWD = range(11)
_FIELDS = {
    b"host": _F_HOST,
    b"content-length": _F_CL,
    b"transfer-encoding": _F_TE,
    b"connection": _F_CONN,
    b"upgrade": _F_UPGRADE,
    b"expect": _F_EXPECT,
    b"te": _F_HOP,
    b"trailer": _F_HOP,
    b"keep-alive": _F_HOP,
    b"proxy-connection": _F_HOP,
    b"proxy-authorization": _F_HOP,
    b"proxy-authenticate": _F_HOP,
    b"x-forwarded-for": _F_XFF,
    b"x-forwarded-proto": _F_XFP,
    b"x-forwarded-host": _F_XFH,
    b"forwarded": _F_FWD,
}
# First bytes of those names: a field not in _NAMES costs one set lookup more.
_FIRST = frozenset(b"hHcCtTuUeEkKpPxXfF")
# Exact spellings looked up before anything is lower-cased: the fields above as
# usually written, and common fields pyvs ignores whose names start like one it acts
# on (code -1), so that the usual head costs one dict lookup per field.
_IGNORED = (
    b"accept", b"accept-encoding", b"accept-language", b"accept-ranges", b"cache-control", b"content-type",
    b"content-encoding", b"content-language", b"content-disposition", b"content-range", b"content-location",
    b"cookie", b"etag", b"expires", b"from", b"pragma", b"user-agent", b"x-request-id", b"x-content-type-options",
    b"x-frame-options", b"last-modified", b"date", b"server", b"vary", b"referer", b"origin", b"if-none-match",
    b"if-modified-since", b"set-cookie", b"location", b"age", b"authorization", b"strict-transport-security",
)
_NAMES: dict[bytes, int] = {}
for _n, _c in [*_FIELDS.items(), *((n, -1) for n in _IGNORED)]:
    _NAMES[_n] = _c
    _NAMES[b"-".join(p.capitalize() for p in _n.split(b"-"))] = _c
_NAMES[b"TE"] = _F_HOP
_NAMES[b"WWW-Authenticate"] = -1
_NAMES[b"ETag"] = -1


def _classify(name: bytes) -> int:
    """The code of a field name not found as spelled in ``_NAMES`` (-1: not acted on)."""
    lname = name.lower()
    code = _FIELDS.get(lname)
    if code is None:
        return _F_HOP if lname.startswith(b"proxy-") else -1
    return code


_KEEPALIVE_TOKENS = [b"keep-alive"]
_CLOSE_TOKENS = [b"close"]


def strip_hop_fields(block: bytes) -> bytes:
    """``block`` without its hop-by-hop field lines (for a head the proxy rebuilds)."""
    return _STRIP_RESP.sub(b"", block)


def _tokens(value: bytes) -> list[bytes]:
    if value == b"keep-alive" or value == b"Keep-Alive":  # what nearly every peer sends
        return _KEEPALIVE_TOKENS
    if value == b"close":
        return _CLOSE_TOKENS
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def _strip_named(block: bytes, names: set[bytes]) -> bytes:
    """Remove the fields a Connection header names (rare; plain Python is fine)."""
    lines = block.split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() not in names]
    return b"\r\n".join(kept)



# The request and response head classes are their own llhttp protocol objects: the
# parser calls ``on_header`` for every field, and the method returns after one dict
# lookup unless the field is one pyvs acts on. (Slots, every attribute set in
# __init__: reads on the hot path stay on CPython's specialised fast path, which
# class-level defaults would defeat.) Defaults set in __init__ must be immutable:
# the C scanner builds heads as copies of one instance made at import.


class RequestHead:
    """A validated request head.

    ``block`` is the request line and the end-to-end fields, each line ending in CRLF,
    without the final empty line; hop-by-hop fields are already removed, and so are
    the forwarding fields (``X-Forwarded-*``, ``Forwarded``) whose values are kept in
    ``xff``/``xf_proto``/``xf_host``/``forwarded`` for the proxy to decide on.
    """

    __slots__ = (
        "_bad_coding", "_complete", "_conn", "_hosts", "_strip", "block", "expect_continue", "fields",
        "forwarded", "framing", "host", "keep_alive", "length", "method", "target", "upgrade", "version",
        "xf_host", "xf_proto", "xff",
    )

    def __init__(self) -> None:
        self.block: bytes = b""
        self.method: bytes = b""
        self.target: bytes = b""
        self.version: bytes = b"1.1"
        self.host: bytes | None = None
        self.keep_alive: bool = True
        self.framing: int = NO_BODY
        self.length: int = 0
        self.upgrade: bytes | None = None
        self.expect_continue: bool = False
        self.xff: bytes | None = None
        self.xf_proto: bytes | None = None
        self.xf_host: bytes | None = None
        self.forwarded: bytes | None = None
        self.fields: int = 0  # field lines in the head (listener max_headers)
        self._hosts: int = 0  # parse state
        self._conn: list[bytes] | None = None
        self._strip: bool = False
        self._bad_coding: bool = False
        self._complete: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        code = _NAMES.get(name)
        if code is None:
            if name[0] not in _FIRST:
                return
            code = _classify(name)
        if code < 0:
            return
        value = value.strip(b" \t")
        if code == _F_HOST:
            self._hosts += 1
            self.host = value
        elif code == _F_CL:
            if self.framing != CHUNKED:
                self.framing = LENGTH
                self.length = int(value)  # llhttp accepts digits only, one value
        elif code == _F_CONN:
            toks = _tokens(value)
            self._conn = toks if self._conn is None else self._conn + toks
            if toks != _KEEPALIVE_TOKENS:  # a lone keep-alive (any spelling) is forwarded as it is
                self._strip = True
        elif code == _F_TE:
            # llhttp accepts only codings that end in chunked; pyvs supports chunked alone.
            if value.lower() != b"chunked":
                self._bad_coding = True  # 400 if llhttp rejects the head, 501 if not
            self.framing = CHUNKED
            self.length = 0
            self._strip = True
        elif code == _F_UPGRADE:
            self.upgrade = value
            self._strip = True
        elif code == _F_EXPECT:
            self.expect_continue = value.lower() == b"100-continue"
        elif code == _F_HOP:
            self._strip = True
        else:
            self._strip = True
            if code == _F_XFF:
                self.xff = value if self.xff is None else self.xff + b", " + value
            elif code == _F_XFP:
                self.xf_proto = value
            elif code == _F_XFH:
                self.xf_host = value
            else:
                self.forwarded = value if self.forwarded is None else self.forwarded + b", " + value

    def on_headers_complete(self) -> None:
        self._complete = True

    @property
    def has_body(self) -> bool:
        return self.framing != NO_BODY

    @property
    def path(self) -> bytes:
        """The path, also for an absolute-form target (``http://host/p?q`` -> ``/p``)."""
        target = self.target
        if not target.startswith(b"/") and b"://" in target:
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        return target.split(b"?", 1)[0]

    @property
    def replayable(self) -> bool:
        """Idempotent and without a body: safe to send again after a failed attempt."""
        return self.framing == NO_BODY and self.method in IDEMPOTENT

    def field_lines(self) -> list[tuple[bytes, bytes]]:
        """The end-to-end fields as (name, value) pairs (for filters that need them)."""
        out = []
        for line in self.block.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                out.append((name, value.strip()))
        return out


def _rejected(exc: httptools.HttpParserError) -> ProtocolError:
    """The error for a head llhttp rejected (or a callback of ours raised in)."""
    cause = exc.__context__
    if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(cause, ProtocolError):
        return cause
    return ProtocolError(f"malformed head: {exc}")


def parse_request_head(block: bytes) -> RequestHead:
    """Validate and digest a request head. ``block`` ends with ``\\r\\n\\r\\n``.

    Raises :class:`ProtocolError` (400; 501 for an unknown transfer coding; 505 for
    an unknown version) on any violation: nothing of a bad request reaches a server.
    """
    if _scan_request is not None:
        plain = _scan_request(block)
        if plain is not None:  # HTTP/1.1, one Host, no chunked body, nothing to strip
            return plain
    head = RequestHead()
    try:
        httptools.HttpRequestParser(head).feed_data(block)
    except httptools.HttpParserUpgrade:
        pass  # the head itself was valid; what follows is another protocol
    except httptools.HttpParserError as exc:
        raise _rejected(exc) from None
    if not head._complete:
        raise ProtocolError("malformed head")
    line_end = block.find(b"\r\n")
    parts = block[:line_end].split(b" ")
    if len(parts) != 3 or not parts[1] or block[0] in (10, 13):
        # (llhttp skips empty lines before a request line; the method read here would
        # then carry them, and routes and ACLs would not see the method the server runs)
        raise ProtocolError("malformed request line")
    method, target, version = parts
    head.method = method
    head.target = target
    version = version[5:]
    if version != b"1.1":
        if version != b"1.0":
            raise ProtocolError(f"unsupported HTTP version {version.decode(errors='replace')}", 505)
        head.version = version
    if head._bad_coding:  # after the request line and version checks, as they are reported first
        raise ProtocolError("transfer codings other than chunked are not supported", 501)
    if head._hosts != 1:
        if head._hosts > 1:
            raise ProtocolError("more than one Host field")
        if version == b"1.1":
            raise ProtocolError("HTTP/1.1 request without Host")
    elif _HOST.fullmatch(head.host or b"") is None:
        raise ProtocolError("invalid Host")  # RFC 9112 3.2; it is routed on and forwarded
    # Keep-alive: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive".
    conn_tokens = head._conn
    if conn_tokens is not None:
        if version == b"1.1":
            head.keep_alive = b"close" not in conn_tokens
        else:
            head.keep_alive = b"keep-alive" in conn_tokens and b"close" not in conn_tokens
        if head.upgrade is not None and b"upgrade" not in conn_tokens:
            head.upgrade = None  # Upgrade without "Connection: upgrade" is not an upgrade
    else:
        if version != b"1.1":
            head.keep_alive = False
        head.upgrade = None
    if version != b"1.1" and head.framing == CHUNKED:
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing;
        # the message is processed, then the connection closed.
        head.keep_alive = False
    body = block[:-2]
    if head._strip:
        body = _STRIP_REQ.sub(b"", body)
        if conn_tokens is not None:
            named = {t for t in conn_tokens if t not in _CONN_KNOWN}
            if named:
                body = _strip_named(body, named)
    head.block = body
    return head


_HOST_LINE = re.compile(rb"\r\nhost[ \t]*:[^\r\n]*(?=\r\n)", re.IGNORECASE)


def to_origin_form(head: RequestHead) -> None:
    """An absolute-form request (``GET http://www.a.example/x HTTP/1.1``), as a client
    sends to a proxy: the target's authority *is* the host (RFC 9112 3.2.2: a Host
    field that says otherwise is ignored). It is routed on and forwarded as an
    origin-form request with that Host. ``*`` (OPTIONS) is left alone; any other
    target that does not start with "/" is malformed."""
    target = head.target
    if target == b"*":
        return
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ProtocolError("malformed request target")
    end = len(rest)
    for stop in (b"/", b"?"):
        i = rest.find(stop)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not authority or b"@" in authority or _HOST.fullmatch(authority) is None:
        raise ProtocolError("invalid authority in the request target")
    origin = rest[end:] or b"/"
    if origin[0] == 63:  # "?query" with an empty path
        origin = b"/" + origin
    block = head.block
    line_end = block.find(b"\r\n")
    block = head.method + b" " + origin + b" HTTP/" + head.version + block[line_end:]
    if head.host is None:
        block += b"Host: " + authority + b"\r\n"
    else:
        block = _HOST_LINE.sub(lambda m: b"\r\nHost: " + authority, block, count=1)
    head.block = block
    head.target = origin
    head.host = authority


class ResponseHead:
    """A validated response head. ``block`` as for :class:`RequestHead`.

    ``codings``: the transfer codings applied before the final chunked coding (or
    all of them for a body delimited by the close), lower-cased and joined with
    ``", "`` (``b"gzip"``); None when the body has no transfer coding but chunked.
    The Transfer-Encoding field itself is removed from ``block`` (hop-by-hop): a
    client that gets the body with its coding must be told it again."""

    __slots__ = (
        "_complete", "_conn", "_hop", "_te", "block", "codings", "framing", "keep_alive", "length", "raw_ok",
        "status", "upgrade", "version",
    )

    def __init__(self) -> None:
        self.block: bytes = b""
        self.status: int = 0
        self.version: bytes = b"1.1"
        self.framing: int = UNTIL_CLOSE
        self.length: int = 0
        self.keep_alive: bool = True
        self.upgrade: bytes | None = None
        # True when the original head can be forwarded byte for byte to an HTTP/1.1
        # keep-alive client: no hop-by-hop field other than "Connection: keep-alive".
        self.raw_ok: bool = True
        self._conn: list[bytes] | None = None  # parse state
        self.codings: bytes | None = None
        self._hop: bool = False
        self._te: bytes | None = None
        self._complete: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        code = _NAMES.get(name)
        if code is None:
            if name[0] not in _FIRST_RESP:
                return
            code = _classify(name)
        if code < 0:
            return
        if code == _F_CL:  # llhttp refuses it together with Transfer-Encoding
            self.framing = LENGTH
            self.length = int(value)  # llhttp accepts digits only, one value
        elif code == _F_CONN:
            if value == b"keep-alive" and self._conn is None:  # what nearly every server sends
                self._conn = _KEEPALIVE_TOKENS
                return
            toks = _tokens(value.strip(b" \t"))
            self._conn = toks if self._conn is None else self._conn + toks
            if toks != _KEEPALIVE_TOKENS:  # "Keep-Alive", "KEEP-ALIVE ": still forwarded byte for byte
                self._hop = True
        elif code == _F_TE:
            self._hop = True  # the codings are read once the whole head is known
            self._te = value if self._te is None else self._te + b"," + value
        elif code == _F_UPGRADE:
            self.upgrade = value.strip(b" \t")
            self._hop = True
        elif code == _F_HOP:
            self._hop = True

    def on_headers_complete(self) -> None:
        self._complete = True


# Transfer codings a response may carry besides chunked (RFC 9112 7, the IANA
# registry; x-gzip and x-compress as gzip and compress). pyvs never decodes them: it
# passes them on to an HTTP/1.1 client in Transfer-Encoding.
_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"})


def _response_codings(rh: ResponseHead, te: bytes) -> None:
    """The framing of a response with Transfer-Encoding (RFC 9112 6.1, 6.3).

    Final coding chunked: a chunked body, the codings before it kept in ``codings``.
    Final coding another one: a body delimited by the close (6.3 rule 4 for
    responses), all codings kept. Anything pyvs cannot name, chunked anywhere but
    last (applied twice, or under another coding it would have to re-chunk), an empty
    field or a coding with parameters: 502, as nothing of it can be forwarded right.
    (Content-Length together with Transfer-Encoding was refused by llhttp already.)
    """
    codings = [c.strip(b" \t").lower() for c in te.split(b",")]
    codings = [c for c in codings if c]  # empty list elements are ignored (RFC 9110 5.6.1)
    if not codings:
        raise ProtocolError("empty Transfer-Encoding", 502)
    for c in codings[:-1]:
        if c not in _CODINGS:
            raise ProtocolError(f"transfer coding {c[:40]!r} not supported before the last one", 502)
    last = codings[-1]
    if last == b"chunked":
        rh.framing = CHUNKED
        del codings[-1]
    elif last in _CODINGS:
        rh.framing = UNTIL_CLOSE
    else:
        raise ProtocolError(f"unknown transfer coding {last[:40]!r}", 502)
    rh.length = 0
    rh.codings = b", ".join(codings) if codings else None


# First bytes of the response fields pyvs acts on (framing and hop-by-hop).
_FIRST_RESP = frozenset(b"cCtTuUkKpP")


def parse_response_head(block: bytes, *, head_request: bool) -> ResponseHead:
    """Validate and digest a response head; ``head_request`` when it answers HEAD."""
    if _scan_response is not None:
        plain = _scan_response(block, head_request)
        if plain is not None:  # HTTP/1.1, 2xx-5xx, forwarded byte for byte
            return plain
    rh = ResponseHead()
    try:
        httptools.HttpResponseParser(rh).feed_data(block)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        raise _rejected(exc) from None
    if not rh._complete:
        raise ProtocolError("malformed head")
    if rh._te is not None:
        _response_codings(rh, rh._te)
    version = block[5:8]
    rh.status = status = int(block[9:12])
    if not 100 <= status <= 599:  # RFC 9110 15: a three-digit code of the classes 1xx-5xx
        raise ProtocolError(f"invalid status code {status}", 502)
    if head_request or status < 200 or status == 204 or status == 304:
        rh.framing = NO_BODY
    conn_tokens = rh._conn
    if version == b"1.1":
        if conn_tokens is not None and b"close" in conn_tokens:
            rh.keep_alive = False
    else:
        rh.version = version
        rh.keep_alive = conn_tokens is not None and b"keep-alive" in conn_tokens
    if rh.framing == UNTIL_CLOSE:
        rh.keep_alive = False
    if rh._hop or version != b"1.1":
        rh.raw_ok = False
        body = _STRIP_RESP.sub(b"", block[:-2])
        if conn_tokens is not None:
            named = {t for t in conn_tokens if t not in _CONN_KNOWN}
            if named:
                body = _strip_named(body, named)
        if version != b"1.1":
            body = b"HTTP/1.1" + body[8:]
        rh.block = body
    else:
        rh.block = block[:-2]
    return rh


_scan_request: Callable[[bytes], RequestHead | None] | None = None
_scan_response: Callable[[bytes, bool], ResponseHead | None] | None = None
if _scanner is not None:
    _scanner.bind(RequestHead(), ResponseHead())
    _scan_request = _scanner.scan_request
    _scan_response = _scanner.scan_response

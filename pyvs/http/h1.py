"""HTTP/1.1 message heads: strict validation by llhttp, fields read from the raw bytes.

Theory of operation
-------------------
A proxy needs very little from a head: the request line, Host, the framing
(Content-Length / Transfer-Encoding), the hop-by-hop fields it must drop, and the
forwarding fields it rewrites. Everything else passes through untouched. So instead
of one Python callback per header field, a head is handled as one ``bytes`` block:

1. the caller finds the end of the head (``\\r\\n\\r\\n``) in its buffer;
2. :func:`parse_request_head` / :func:`parse_response_head` feed exactly that block
   to an llhttp parser (httptools) that has *no* per-field callbacks, so llhttp does
   the strict checks in C -- request-line and field syntax, obs-fold, conflicting
   Content-Length, Content-Length with Transfer-Encoding, a coding other than chunked
   last -- without calling into Python per field;
3. one regular expression pass (``finditer`` in C) picks out the few fields pyvs acts
   on; a second (``sub``) removes the hop-by-hop ones only when there are any.

The result carries ``block``: the head re-usable as-is for forwarding (start line
and end-to-end fields, without the final blank line), so in the common case a
request head is forwarded as ``block + added fields + CRLF`` and a response head is
forwarded byte for byte.

Bodies are framed by :mod:`pyvs.http.framing`; this module only decides which framing
applies (RFC 9112 section 6).
"""

from __future__ import annotations

import re
from typing import Final

import httptools

from pyvs.http.errors import ProtocolError

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
# First bytes of those names: any other field costs one set lookup in the callback.
_FIRST = frozenset(b"hHcCtTuUeEkKpPxXfF")


class _Collector:
    """llhttp protocol object: validation happens in C; Python sees only the few
    fields whose name starts like one pyvs acts on."""

    __slots__ = ("complete", "fields")

    def __init__(self) -> None:
        self.complete = False
        self.fields: list[tuple[int, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name[0] in _FIRST:
            lname = name.lower()
            code = _FIELDS.get(lname)
            if code is not None:
                self.fields.append((code, value))
            elif lname.startswith(b"proxy-"):
                self.fields.append((_F_HOP, value))

    def on_headers_complete(self) -> None:
        self.complete = True


_COLLECTOR = _Collector()


def _collect(parser: httptools.HttpRequestParser | httptools.HttpResponseParser, block: bytes) -> list[
    tuple[int, bytes]
]:
    """Feed ``block`` (a whole head) to llhttp; return ``(code, value)`` of the fields
    pyvs acts on. Raises :class:`ProtocolError` if llhttp rejects the head."""
    col = _COLLECTOR
    col.complete = False
    fields = col.fields = []
    try:
        parser.feed_data(block)
    except httptools.HttpParserUpgrade:
        pass  # the head itself was valid; what follows is another protocol
    except httptools.HttpParserError as exc:
        raise ProtocolError(f"malformed head: {exc}") from None
    if not col.complete:
        raise ProtocolError("malformed head")
    return fields


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


class RequestHead:
    """A validated request head.

    ``block`` is the request line and the end-to-end fields, each line ending in CRLF,
    without the final empty line; hop-by-hop fields are already removed, and so are
    the forwarding fields (``X-Forwarded-*``, ``Forwarded``) whose values are kept in
    ``xff``/``xf_proto``/``xf_host``/``forwarded`` for the proxy to decide on.
    """

    __slots__ = (
        "block",
        "expect_continue",
        "forwarded",
        "framing",
        "host",
        "keep_alive",
        "length",
        "method",
        "target",
        "upgrade",
        "version",
        "xf_host",
        "xf_proto",
        "xff",
    )

    def __init__(self) -> None:
        self.block = b""
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.host: bytes | None = None
        self.keep_alive = True
        self.framing = NO_BODY
        self.length = 0
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.xff: bytes | None = None
        self.xf_proto: bytes | None = None
        self.xf_host: bytes | None = None
        self.forwarded: bytes | None = None

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


def parse_request_head(block: bytes) -> RequestHead:
    """Validate and digest a request head. ``block`` ends with ``\\r\\n\\r\\n``.

    Raises :class:`ProtocolError` (400; 501 for an unknown transfer coding; 505 for
    an unknown version) on any violation: nothing of a bad request reaches a server.
    """
    fields = _collect(httptools.HttpRequestParser(_COLLECTOR), block)
    head = RequestHead()
    line_end = block.find(b"\r\n")
    parts = block[:line_end].split(b" ")
    if len(parts) != 3 or not parts[1]:
        raise ProtocolError("malformed request line")
    method, target, version = parts
    head.method = method
    head.target = target
    head.version = version = version[5:]
    if version != b"1.1" and version != b"1.0":
        raise ProtocolError(f"unsupported HTTP version {version.decode(errors='replace')}", 505)
    body = block[:-2]
    conn_tokens: list[bytes] | None = None
    strip = False
    hosts = 0
    for code, value in fields:
        value = value.strip(b" \t")
        if code == _F_HOST:
            hosts += 1
            head.host = value
        elif code == _F_CL:
            if head.framing != CHUNKED:
                head.framing = LENGTH
                head.length = int(value.split(b",")[0])  # llhttp rejected differing values
        elif code == _F_CONN:
            toks = _tokens(value)
            conn_tokens = toks if conn_tokens is None else conn_tokens + toks
            if toks != [b"keep-alive"]:
                strip = True
        elif code == _F_TE:
            # llhttp accepts only codings that end in chunked; pyvs supports chunked alone.
            if value.lower() != b"chunked":
                raise ProtocolError("transfer codings other than chunked are not supported", 501)
            head.framing = CHUNKED
            head.length = 0
            strip = True
        elif code == _F_UPGRADE:
            head.upgrade = value
            strip = True
        elif code == _F_EXPECT:
            head.expect_continue = value.lower() == b"100-continue"
        elif code == _F_HOP:
            strip = True
        else:
            strip = True
            if code == _F_XFF:
                head.xff = value if head.xff is None else head.xff + b", " + value
            elif code == _F_XFP:
                head.xf_proto = value
            elif code == _F_XFH:
                head.xf_host = value
            else:
                head.forwarded = value if head.forwarded is None else head.forwarded + b", " + value
    if hosts != 1:
        if hosts > 1:
            raise ProtocolError("more than one Host field")
        if version == b"1.1":
            raise ProtocolError("HTTP/1.1 request without Host")
    # Keep-alive: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive".
    if conn_tokens is not None:
        if version == b"1.1":
            head.keep_alive = b"close" not in conn_tokens
        else:
            head.keep_alive = b"keep-alive" in conn_tokens and b"close" not in conn_tokens
        if head.upgrade is not None and b"upgrade" not in conn_tokens:
            head.upgrade = None  # Upgrade without "Connection: upgrade" is not an upgrade
    else:
        head.keep_alive = version == b"1.1"
        head.upgrade = None
    if strip:
        body = _STRIP_REQ.sub(b"", body)
        if conn_tokens is not None:
            named = {t for t in conn_tokens if t not in _CONN_KNOWN}
            if named:
                body = _strip_named(body, named)
    head.block = body
    return head


class ResponseHead:
    """A validated response head. ``block`` as for :class:`RequestHead`."""

    __slots__ = ("block", "framing", "keep_alive", "length", "raw_ok", "status", "upgrade", "version")

    def __init__(self) -> None:
        self.block = b""
        self.status = 0
        self.version = b"1.1"
        self.framing = NO_BODY
        self.length = 0
        self.keep_alive = True
        self.upgrade: bytes | None = None
        # True when the original head can be forwarded byte for byte to an HTTP/1.1
        # keep-alive client: no hop-by-hop field other than "Connection: keep-alive".
        self.raw_ok = True


def parse_response_head(block: bytes, *, head_request: bool) -> ResponseHead:
    """Validate and digest a response head; ``head_request`` when it answers HEAD."""
    fields = _collect(httptools.HttpResponseParser(_COLLECTOR), block)
    rh = ResponseHead()
    rh.version = version = block[5:8]
    rh.status = status = int(block[9:12])
    body = block[:-2]
    conn_tokens: list[bytes] | None = None
    framing = UNTIL_CLOSE
    hop = False
    for code, value in fields:
        if code == _F_CL:
            if framing != CHUNKED:
                framing = LENGTH
                rh.length = int(value.split(b",")[0])
        elif code == _F_CONN:
            toks = _tokens(value)
            conn_tokens = toks if conn_tokens is None else conn_tokens + toks
            if toks != [b"keep-alive"]:
                hop = True
        elif code == _F_TE:
            hop = True
            if value.strip(b" \t").lower().endswith(b"chunked"):
                framing = CHUNKED
                rh.length = 0
        elif code == _F_UPGRADE:
            rh.upgrade = value.strip(b" \t")
            hop = True
        elif code == _F_HOP:
            hop = True
    if head_request or status < 200 or status == 204 or status == 304:
        framing = NO_BODY
    rh.framing = framing
    if version == b"1.1":
        rh.keep_alive = conn_tokens is None or b"close" not in conn_tokens
    else:
        rh.keep_alive = conn_tokens is not None and b"keep-alive" in conn_tokens
    if framing == UNTIL_CLOSE:
        rh.keep_alive = False
    if hop or version != b"1.1":
        rh.raw_ok = False
        body = _STRIP_RESP.sub(b"", body)
        if conn_tokens is not None:
            named = {t for t in conn_tokens if t not in _CONN_KNOWN}
            if named:
                body = _strip_named(body, named)
        if version != b"1.1":
            body = b"HTTP/1.1" + body[8:]
    rh.block = body
    return rh

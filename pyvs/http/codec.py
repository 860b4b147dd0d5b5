"""HTTP/1.1 message readers on httptools (llhttp), sans-I/O.

Theory of operation
-------------------
A reader is fed bytes and calls a *sink* with events: ``*_head(head)``, ``*_body(data)``,
``*_end(trailers)``. It never touches a socket or a clock, so the framing rules are
tested by feeding bytes (tests/unit/test_codec.py), h11 style.

llhttp enforces the strict framing (request smuggling defences: CL+TE conflicts,
bad chunk sizes, invalid characters). On top of it the reader:

* splits headers into *end-to-end* ones, serialised once into ``head.fields`` (bytes,
  ready to forward), and the hop-by-hop / framing ones the proxy regenerates
  (RFC 9110 7.6.1: Connection and the names it lists, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-*);
* notes the few headers the proxy needs (Host, Expect, X-Forwarded-*, Forwarded);
* bounds the size of a request head (431) before llhttp buffers it all;
* ends responses that carry no body (HEAD, 1xx, 204, 304) at the head, because
  httptools cannot tell llhttp that a response answers a HEAD request.

Header names are matched by their lower-cased bytes against one frozen set, so an
ordinary header costs one ``lower()`` and one set lookup.
"""

from __future__ import annotations

from typing import Protocol

import httptools

# Headers removed before forwarding (the proxy adds its own framing and Connection).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Request headers the proxy reads or rewrites; everything else is copied verbatim.
_REQ_SPECIAL = HOP_BY_HOP | {
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"via",
    b"content-length",
}
_RESP_SPECIAL = HOP_BY_HOP | {b"content-length"}

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class ProtocolError(Exception):
    """The peer broke HTTP framing. ``status`` is what a client should be answered."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestHead:
    """A parsed request head. ``fields`` is the end-to-end header block as bytes."""

    __slots__ = (
        "chunked",
        "connection_tokens",
        "content_length",
        "expect_continue",
        "fields",
        "forwarded",
        "headers",
        "host",
        "keep_alive",
        "method",
        "target",
        "upgrade",
        "upgrade_proto",
        "version",
        "xf_host",
        "xf_proto",
        "xff",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields = bytearray()
        self.host: bytes | None = None
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.upgrade = False
        self.upgrade_proto = b""
        self.connection_tokens: list[bytes] = []
        self.xff: bytes | None = None
        self.xf_proto: bytes | None = None
        self.xf_host: bytes | None = None
        self.forwarded: bytes | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def path(self) -> bytes:
        """The path part of the target (no query)."""
        return self.target.split(b"?", 1)[0]


class ResponseHead:
    """A parsed response head."""

    __slots__ = (
        "chunked",
        "content_length",
        "fields",
        "keep_alive",
        "reason",
        "status",
        "upgrade",
        "upgrade_proto",
        "version",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.version = "1.1"
        self.fields = bytearray()
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.upgrade = False
        self.upgrade_proto = b""


class RequestSink(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self, trailers: bytes) -> None: ...


class ResponseSink(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, trailers: bytes) -> None: ...


def _strip_connection_named(head: RequestHead | ResponseHead, tokens: list[bytes]) -> None:
    """Remove the fields the Connection header names (rare: rebuilt from scratch)."""
    names = {t for t in tokens if t not in (b"close", b"keep-alive", b"upgrade")}
    if not names:
        return
    out = bytearray()
    for line in bytes(head.fields).split(b"\r\n"):
        if line and line.split(b":", 1)[0].strip().lower() not in names:
            out += line + b"\r\n"
    head.fields = out
    if isinstance(head, RequestHead):
        head.headers = [(n, v) for n, v in head.headers if n.lower() not in names]


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


class RequestReader:
    """Parse a stream of requests (keep-alive, pipelined) into sink events."""

    __slots__ = ("_head", "_head_bytes", "_in_head", "_parser", "_partial", "_sink", "_trailers", "max_head")

    def __init__(self, sink: RequestSink, max_head: int = 65536) -> None:
        self._sink = sink
        self.max_head = max_head
        self._parser = httptools.HttpRequestParser(self)
        self._head = RequestHead()
        self._in_head = False
        self._head_bytes = 0  # parsed request-line and field bytes of the current head
        self._partial = 0  # bytes fed while a head is incomplete (llhttp buffers them)
        self._trailers: bytearray | None = None

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``. Returns the offset where tunnel bytes start after an Upgrade
        or CONNECT request head, else None. Raises :class:`ProtocolError`."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except ProtocolError:
            raise
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed request: {exc}") from None
        if self._in_head:
            self._partial += len(data)
            if self._partial > self.max_head:
                raise ProtocolError("request head too large", 431)
        return None

    # ---- httptools callbacks -------------------------------------------
    def on_message_begin(self) -> None:
        self._head = RequestHead()
        self._in_head = True
        self._head_bytes = 0
        self._partial = 0
        self._trailers = None

    def on_url(self, url: bytes) -> None:
        self._head.target += url
        self._head_bytes += len(url)
        if self._head_bytes > self.max_head:
            raise ProtocolError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            if name.lower() not in HOP_BY_HOP:
                self._trailers += name + b": " + value + b"\r\n"
            return
        head = self._head
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_head:
            raise ProtocolError("request head too large", 431)
        head.headers.append((name, value))
        lname = name.lower()
        if lname not in _REQ_SPECIAL:
            head.fields += name + b": " + value + b"\r\n"
        elif lname == b"host":
            if head.host is not None:
                raise ProtocolError("more than one Host header")
            head.host = value
        elif lname == b"connection":
            head.connection_tokens += _tokens(value)
        elif lname == b"expect":
            if value.lower() == b"100-continue":
                head.expect_continue = True
            head.fields += name + b": " + value + b"\r\n"
        elif lname == b"upgrade":
            head.upgrade_proto = value
        elif lname == b"x-forwarded-for":
            head.xff = value if head.xff is None else head.xff + b", " + value
        elif lname == b"x-forwarded-proto":
            head.xf_proto = value
        elif lname == b"x-forwarded-host":
            head.xf_host = value
        elif lname == b"forwarded":
            head.forwarded = value if head.forwarded is None else head.forwarded + b", " + value
        elif lname == b"via":
            head.fields += name + b": " + value + b"\r\n"
        elif lname == b"content-length":
            head.content_length = int(value)
            head.fields += name + b": " + value + b"\r\n"
        elif lname == b"transfer-encoding":
            head.chunked = True  # llhttp rejects any coding that does not end in chunked

    def on_headers_complete(self) -> None:
        p = self._parser
        head = self._head
        self._in_head = False
        head.method = p.get_method()
        head.version = p.get_http_version()
        head.keep_alive = p.should_keep_alive()
        head.upgrade = p.should_upgrade()
        if head.version == "1.1" and head.host is None:
            raise ProtocolError("HTTP/1.1 request without Host")
        if head.version not in ("1.1", "1.0"):
            raise ProtocolError(f"unsupported HTTP version {head.version}", 505)
        if head.chunked:
            head.content_length = None
        if head.connection_tokens:
            _strip_connection_named(head, head.connection_tokens)
        self._sink.on_request_head(head)

    def on_body(self, data: bytes) -> None:
        self._sink.on_request_body(data)

    def on_chunk_header(self) -> None:
        # Fields reported after a chunk header can only be the trailer section that
        # follows the last (zero-size) chunk.
        self._trailers = bytearray()

    def on_message_complete(self) -> None:
        trailers = bytes(self._trailers) if self._trailers else b""
        self._trailers = None
        self._sink.on_request_end(trailers)


class ResponseReader:
    """Parse responses from one server connection into sink events.

    Call :meth:`expect` before each response with whether it answers a HEAD request.
    """

    __slots__ = ("_head", "_head_request", "_no_body_done", "_parser", "_trailers", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        # The sink is swapped as a pooled connection passes from client to client.
        self.sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._head = ResponseHead()
        self._head_request = False
        self._no_body_done = False
        self._trailers: bytearray | None = None

    def expect(self, head_request: bool) -> None:
        self._head_request = head_request
        if self._no_body_done:
            # The previous response ended at its head (HEAD): llhttp still waits for a
            # body it announced, so start over with a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            self._no_body_done = False

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``; returns the tunnel offset after a 101 response, else None."""
        if self._no_body_done:
            return None  # bytes after a bodiless response's head: ignored until expect()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(f"malformed response: {exc}", 502) from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed response: {exc}", 502) from None
        return None

    def on_message_begin(self) -> None:
        self._head = ResponseHead()
        self._trailers = None

    def on_status(self, reason: bytes) -> None:
        self._head.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            if name.lower() not in HOP_BY_HOP:
                self._trailers += name + b": " + value + b"\r\n"
            return
        head = self._head
        lname = name.lower()
        if lname not in _RESP_SPECIAL:
            head.fields += name + b": " + value + b"\r\n"
        elif lname == b"content-length":
            head.content_length = int(value)
        elif lname == b"transfer-encoding":
            head.chunked = True
        elif lname == b"upgrade":
            head.upgrade_proto = value
        elif lname == b"connection":
            tokens = _tokens(value)
            if any(t not in (b"close", b"keep-alive", b"upgrade") for t in tokens):
                _strip_connection_named(head, tokens)

    def on_headers_complete(self) -> None:
        p = self._parser
        head = self._head
        head.status = p.get_status_code()
        head.version = p.get_http_version()
        head.keep_alive = p.should_keep_alive()
        head.upgrade = head.status == 101
        if self._head_request and head.status >= 200:
            self._no_body_done = True
        self.sink.on_response_head(head)
        if self._no_body_done:
            self.sink.on_response_end(b"")

    def on_body(self, data: bytes) -> None:
        self.sink.on_response_body(data)

    def on_chunk_header(self) -> None:
        self._trailers = bytearray()

    def on_chunk_complete(self) -> None:
        if self._trailers is not None and not self._trailers:
            self._trailers = None

    def on_message_complete(self) -> None:
        if self._no_body_done:
            return
        trailers = bytes(self._trailers) if self._trailers else b""
        self._trailers = None
        self.sink.on_response_end(trailers)

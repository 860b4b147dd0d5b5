"""Header translation between an HTTP/2 stream and the HTTP/1.1 heads pyvs forwards.

Theory of operation
-------------------
An HTTP/2 request is turned into the HTTP/1.1 head a client could have sent
(``request_block``) and then validated by the very parser HTTP/1 requests go
through (:func:`pyvs.http.h1.parse_request_head`): the exchange, the router and the
filters see one kind of request whichever protocol brought it. Two things make that
safe. First, a field name or value that could change the meaning of the HTTP/1 text
(CR, LF, NUL, a colon in a name) is refused here, before any text is built -- HPACK
carries raw bytes, so without this check a value could smuggle a second header line
(or a second request) to the server. Second, ``:authority`` becomes ``Host`` (RFC 9113
8.3.1), several ``cookie`` fields are joined with ``"; "`` (8.2.3), and a body whose
length the client did not announce is sent chunked.

The other way, a response head (``ResponseHead.block``) becomes an h2 field list:
``:status`` first, names lower-cased, and the connection-specific fields removed
(RFC 9113 8.2.2: Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding,
Upgrade, TE). pyvs's own answers (errors, filter replies) are whole HTTP/1.1 responses
and are split by ``reply_parts``.
"""

from __future__ import annotations

import re

from pyvs.http.errors import ProtocolError

# Connection-specific fields: never sent in HTTP/2 (RFC 9113 8.2.2).
CONNECTION_FIELDS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                               b"upgrade", b"te"})
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# Methods whose HTTP/1.1 request carries a Content-Length even when the body is empty.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

Fields = list[tuple[bytes, bytes]]


def request_block(fields: Fields, end_stream: bool) -> tuple[bytes, bool]:
    """The HTTP/1.1 head (ending with the empty line) for an h2 request, and whether
    its body must be chunk-encoded (the client announced no length). Raises
    :class:`ProtocolError` (400) for a field HTTP/1 cannot carry."""
    method = path = authority = scheme = None
    lines: list[bytes] = []
    cookies: list[bytes] = []
    host = None
    has_length = False
    regular = False
    for name, value in fields:
        if name[:1] == b":":
            # RFC 9113 8.3: pseudo-fields first, each once, only the request's own
            if regular:
                raise ProtocolError("pseudo-field after a regular field")
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":scheme" and scheme is None:
                scheme = value  # (not forwarded: X-Forwarded-Proto says how the client came)
            else:
                raise ProtocolError("unknown or repeated pseudo-field")
            continue
        regular = True
        if _NAME.match(name) is None:
            raise ProtocolError("invalid field name")
        if _BAD_VALUE.search(value) is not None:
            raise ProtocolError("invalid character in a field value")
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            host = value
        elif name in CONNECTION_FIELDS:
            # RFC 9113 8.2.2: connection-specific fields make the request malformed;
            # only "te: trailers" is allowed (hop-by-hop: not forwarded)
            if name != b"te" or value != b"trailers":
                raise ProtocolError("connection-specific field in an HTTP/2 request")
        else:
            if name == b"content-length":
                has_length = True
            lines.append(name + b": " + value + b"\r\n")
    if method is None or _METHOD.match(method) is None:
        raise ProtocolError("missing or invalid :method")
    if scheme is None and method != b"CONNECT":
        raise ProtocolError("missing :scheme")
    if path is None or not path or _BAD_TARGET.search(path) is not None:
        raise ProtocolError("missing or invalid :path")
    if path[:1] != b"/" and (path != b"*" or method != b"OPTIONS"):
        # RFC 9113 8.3.1: origin form (or "*" for OPTIONS). An absolute URI here would
        # reach the server with a host the routing, the ACLs and the 421 rule never saw.
        raise ProtocolError("a :path that is not an absolute path")
    if authority is not None:
        if _BAD_TARGET.search(authority) is not None:
            raise ProtocolError("invalid :authority")
        host = authority
    chunked = not end_stream and not has_length
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    elif end_stream and not has_length and method in _BODY_METHODS:
        lines.append(b"content-length: 0\r\n")
    if cookies:
        lines.append(b"cookie: " + b"; ".join(cookies) + b"\r\n")
    start = method + b" " + path + b" HTTP/1.1\r\n"
    if host is not None:
        start += b"host: " + host + b"\r\n"
    return start + b"".join(lines) + b"\r\n", chunked


def trailer_lines(fields: Fields) -> bytes:
    """Request trailers as the field lines of a chunked body's trailer section."""
    out = []
    for name, value in fields:
        if name[:1] == b":" or _NAME.match(name) is None or _BAD_VALUE.search(value) is not None:
            raise ProtocolError("invalid trailer field")
        if name not in CONNECTION_FIELDS:
            out.append(name + b": " + value + b"\r\n")
    return b"".join(out)


def trailer_fields(lines: bytes) -> Fields:
    """A chunked body's trailer section (CRLF-terminated field lines, already checked
    by the chunked decoder) as h2 fields: names lower-cased, no connection-specific
    or pseudo fields."""
    out: Fields = []
    for line in lines.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        name = name.lower()
        if colon and name and name not in CONNECTION_FIELDS:
            out.append((name, value.strip(b" \t")))
    return out


def response_fields(block: bytes) -> Fields:
    """An HTTP/1 response head (status line and field lines, CRLF-terminated) as an
    h2 field list without the connection-specific fields."""
    lines = block.split(b"\r\n")
    out: Fields = [(b":status", lines[0][9:12])]
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in CONNECTION_FIELDS:
            continue
        out.append((name, value.strip(b" \t")))
    return out


def reply_parts(data: bytes) -> tuple[Fields, bytes]:
    """A whole HTTP/1.1 response made by pyvs (an error, a filter's reply) as h2
    fields and body."""
    end = data.find(b"\r\n\r\n")
    return response_fields(data[: end + 2]), data[end + 4 :]

"""The small responses pyvs itself sends (400, 502, 503, 504, sorry pages), built once.

In http/ (not l7/) because the upstream layer builds sorry pages too and must not
import the proxy.
"""

from __future__ import annotations

REASONS = {
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    410: b"Gone",
    418: b"I'm a teapot",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

_BODIES = {
    400: b"pyvs: the request is malformed.\n",
    408: b"pyvs: the request took too long to arrive.\n",
    413: b"pyvs: the request body is too large.\n",
    431: b"pyvs: the request head is too large.\n",
    502: b"pyvs: the server failed to answer properly.\n",
    503: b"pyvs: no server is available to handle this request.\n",
    504: b"pyvs: the server did not answer in time.\n",
}


def _build(status: int, close: bool) -> bytes:
    body = _BODIES.get(status, b"pyvs: " + REASONS.get(status, b"Error").lower() + b".\n")
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n",
    ]
    if close:
        head.append(b"Connection: close\r\n")
    return b"".join(head) + b"\r\n" + body


_CACHE: dict[tuple[int, bool], bytes] = {}


def sorry_response(status: int, body: str | None, content_type: str) -> tuple[bytes, bytes] | None:
    """(keep-alive, close) variants of a backend's configured sorry response, or None
    for the default 503."""
    if body is None and status == 503:
        return None
    data = _BODIES.get(503, b"") if body is None else body.encode("utf-8")
    reason = REASONS.get(status, b"Service Unavailable" if status == 503 else b"Unavailable")
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\n"
            % (status, reason, content_type.encode("latin-1"), len(data)))
    return head + b"\r\n" + data, head + b"Connection: close\r\n\r\n" + data


def error_response(status: int, close: bool) -> bytes:
    """The full response bytes for ``status``; ``close`` adds ``Connection: close``."""
    key = (status, close)
    data = _CACHE.get(key)
    if data is None:
        data = _CACHE[key] = _build(status, close)
    return data

"""A minimal FilterExchange: a real parsed head and RequestView, a dict of variables
that records which names were asked for. No frontend, no transport."""

from __future__ import annotations

from pyvs.http.h1 import RequestHead, ResponseHead, parse_request_head, parse_response_head
from pyvs.l7.filters.base import Reply
from pyvs.l7.request import RequestView

REQ = b"GET /api/x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Internal: 1\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"


class FakeExchange:
    """What a filter sees of an exchange (satisfies ``FilterExchange``)."""

    def __init__(self, raw: bytes = REQ, *, client_ip: bytes = b"127.0.0.1", scheme: bytes = b"http",
                 variables: dict[str, bytes] | None = None) -> None:
        self.head: RequestHead | None = parse_request_head(raw)
        self.view = RequestView()
        self.view.reset(self.head)
        self.view.client_ip = client_ip
        self.view.scheme = scheme
        self.add_lines: list[bytes] = []
        self.reply: Reply | None = None
        self.vars = variables or {}
        self.asked: list[str] = []

    def variable(self, name: str) -> bytes:
        self.asked.append(name)
        return self.vars.get(name, b"")

    def forwarded(self) -> bytes:
        """The request head as the exchange would write it to the server."""
        assert self.head is not None
        return self.head.block + b"".join(self.add_lines) + b"\r\n"


def response(raw: bytes = RESP, *, head_request: bool = False) -> ResponseHead:
    return parse_response_head(raw, head_request=head_request)

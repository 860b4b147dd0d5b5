"""The filter interface: what an L7 feature may do to an exchange, and when.

Theory of operation
-------------------
A route's features are a *chain* of filters compiled once at load time (one frozen
config per filter; nothing is parsed at request time). The exchange calls, in
chain order:

``on_request(ex)``
    after the route is chosen, before a server is picked. A filter may edit the
    request head (``ex.head.block``), append field lines (``ex.add_lines``), or end
    the exchange with its own answer: set ``ex.reply`` and return ``RESPOND``.
``on_response(ex, rh)``
    when the server's response head arrives. A filter that edits ``rh.block`` must
    clear ``rh.raw_ok`` (the head is then rebuilt for the client instead of being
    forwarded byte for byte).
``ex.stage_body(stage)`` (from ``on_response`` only)
    transform this response's body: ``stage.feed(data, end)`` is called with each
    piece of the server's body as it is read (decoded from its framing; ``end`` on the
    last call) and returns what goes to the client instead. The exchange then drops
    Content-Length and frames the result chunked for an HTTP/1.1 client, by the close
    for an HTTP/1.0 one (pyvs.upstream.connection STAGED). The stage is an object per
    response, so the filter itself stays stateless and shared. Routes whose filters
    never stage a body keep the byte-for-byte path.
    A chunked body may end with trailers (RFC 9110 6.5). A stage that has a
    ``trailers(lines) -> lines`` method says which may follow what it made of the
    body (the compressor drops the digests of the bytes it changed); a stage without
    one drops them all, since they may describe bytes it replaced. ``lines`` are the
    trailer section's CRLF-terminated field lines; the exchange calls this only when
    there are some, after the last ``feed`` (``Exchange._staged_trailers``).

The verdict is a closed enum: an exchange knows every outcome a filter can ask for.
A route whose chain is empty never calls any of this (``Chain.empty``): it keeps the
short path.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyvs.http.h1 import RequestHead, ResponseHead
    from pyvs.l7.request import RequestView


_LENGTH_FIELD = re.compile(rb"(?im)^content-length[ \t]*:[^\r\n]*\r\n")


def drop_length(block: bytes) -> bytes:
    """``block`` without its Content-Length line (a staged body's length is unknown)."""
    return _LENGTH_FIELD.sub(b"", block)


class Verdict(IntEnum):
    """What a filter hook asks the exchange to do next."""

    CONTINUE = 0  # go on with the next filter / the next phase
    RESPOND = 1  # answer with ex.reply; no server is asked
    # (last request filter of a chain only) the filter holds the request and later calls
    # ex.resume_request() or, with ex.reply set, ex.reply_now() (the cache's request collapsing)
    WAIT = 2


class Reply:
    """A response pyvs gives itself (respond, redirect, deny): status, fields, body."""

    __slots__ = ("_cache", "body", "fields", "status")

    def __init__(self, status: int, fields: bytes, body: bytes) -> None:
        self.status = status
        self.fields = fields  # field lines, each ending in CRLF (no Content-Length, no Connection)
        self.body = body
        self._cache: dict[tuple[bool, bool], bytes] = {}

    def encode(self, *, close: bool, head_request: bool = False) -> bytes:
        """The whole HTTP/1.1 response; ``close`` adds ``Connection: close``."""
        key = (close, head_request)
        data = self._cache.get(key)
        if data is None:
            from pyvs.http.responses import REASONS

            reason = REASONS.get(self.status, b"")
            head = b"HTTP/1.1 %d %s\r\n" % (self.status, reason) + self.fields
            if self.status >= 200 and self.status not in (204, 304):  # (RFC 9110 8.6: none on these)
                head += b"Content-Length: %d\r\n" % len(self.body)
            if close:
                head += b"Connection: close\r\n"
            data = head + b"\r\n" + (b"" if head_request else self.body)
            if len(self._cache) < 4:
                self._cache[key] = data
        return data


class BodyStage(Protocol):
    """One response's body transformation (compression): see ``stage_body`` above."""

    def feed(self, data: bytes, end: bool) -> bytes:
        """The transformed bytes for ``data`` (may be empty until enough input came)."""
        ...


class FilterExchange(Protocol):
    """The part of an exchange a filter may read and change."""

    view: RequestView
    head: RequestHead | None
    add_lines: list[bytes]  # field lines (b"Name: value\r\n") appended to the forwarded head
    reply: Reply | None
    cache_status: bytes  # what the cache did (HIT, MISS, ...), for the access log

    def stage_body(self, stage: BodyStage) -> None:
        """Transform this response's body through ``stage`` (from on_response only)."""
        ...

    def resume_request(self) -> None:
        """Go on with a request a filter answered WAIT for (to its server)."""
        ...

    def reply_now(self) -> None:
        """Answer a request a filter answered WAIT for with ``reply``."""
        ...

    def variable(self, name: str) -> bytes:
        """The value of ``%{name}`` for this exchange (see pyvs.l7.filters.variables)."""
        ...


class Filter:
    """Base of every filter; a subclass overrides the hooks it needs.

    ``requests`` / ``responses`` tell the chain which hooks to call, so a filter that
    only rewrites responses costs nothing on the request side.
    """

    __slots__ = ()
    name = "filter"
    requests = False
    responses = False

    def on_request(self, ex: FilterExchange) -> Verdict:
        return Verdict.CONTINUE

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        return Verdict.CONTINUE

    def describe(self) -> str:
        """One line for ``pyvs route`` (what this filter will do)."""
        return self.name


class Chain:
    """A route's compiled filters, split by hook. ``empty``: the short path's gate."""

    __slots__ = ("empty", "filters", "request", "response")

    def __init__(self, filters: tuple[Filter, ...]) -> None:
        self.filters = filters
        self.request = tuple(f for f in filters if f.requests)
        self.response = tuple(f for f in filters if f.responses)
        self.empty = not filters

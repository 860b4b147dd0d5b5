"""Response buffering: free the server while a slow client drains.

Theory of operation
-------------------
Without buffering, pyvs stops reading the server as soon as the client's socket
stops taking bytes (the client transport's high-water mark, 64 KiB): the server
connection is held, and the server's worker with it, until the slowest client has
read all but the last 64 KiB. ``buffer_response: 1m`` raises that mark to 1 MiB for
the client connection when a response of the route starts: a response up to the
bound is read from the server at full speed into the client transport's buffer,
the server connection goes back to the pool at the end of the response, and the
client drains at its own pace. A larger response fills the bound and then streams
with backpressure as before, so memory per client stays bounded.

Nothing is copied: the bytes wait in the transport's own write buffer, where they
would have waited anyway, only more of them. The mark stays raised for the rest of
that client connection (a later response of another route on the same connection
may use the larger buffer too; the bound still holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from pyvs.l7.filters.base import Filter, Verdict

if TYPE_CHECKING:
    import asyncio

    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.filters.base import FilterExchange


class _Down(Protocol):
    transport: asyncio.Transport | None


class _WithDown(Protocol):
    down: _Down


class BufferResponse(Filter):
    """``buffer_response``: see the module docstring."""

    __slots__ = ("response_limit",)
    name = "buffer_response"
    responses = True

    def __init__(self, limit: int) -> None:
        self.response_limit = limit

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        t = cast(_WithDown, ex).down.transport
        if t is not None and t.get_write_buffer_limits()[1] != self.response_limit:
            t.set_write_buffer_limits(high=self.response_limit)
        return Verdict.CONTINUE

    def describe(self) -> str:
        return f"buffer_response {self.response_limit}"


class BufferRequest(Filter):
    """``buffer_request``: the body is collected by the exchange before it asks a
    server (``RouteRuntime.buffer_request``, read in ``Exchange.start``); no hook runs.

    Up to ``request_limit`` bytes of body are kept in memory while the client sends
    them, with the client's read deadline still applying to each read; when the body
    ends (or passes the bound) a server is picked and gets what was collected in one
    write, then the rest as it comes. A slow upload therefore occupies no server
    connection (and no server worker) while it trickles in."""

    __slots__ = ("request_limit",)
    name = "buffer_request"

    def __init__(self, limit: int) -> None:
        self.request_limit = limit

    def describe(self) -> str:
        return f"buffer_request {self.request_limit}"

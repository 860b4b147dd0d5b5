"""The downstream interface: what an exchange needs from the client side.

An exchange (:mod:`pyvs.l7.exchange`) never frames a message for its client: it
hands response heads and errors to its downstream, which knows the client's
protocol. :class:`pyvs.l7.h1conn.H1Connection` implements this for HTTP/1; an HTTP/2
stream will implement it for one stream of a multiplexed connection. Types only
(STYLE rule 7): importing this pulls in no engine code.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.exchange import Exchange
    from pyvs.upstream.connection import UpstreamConn


class Downstream(Protocol):
    """What an exchange needs from the client side (an HTTP/1 connection, an h2 stream).

    The flags are read on the request path; the methods frame and send."""

    transport: asyncio.Transport | None
    req_ended: bool  # the whole request body has been read
    close_after: bool  # the client connection ends after this exchange
    client_write_blocked: bool  # the client is not reading: hold the server too
    reading_paused: bool
    deadline: float
    up_write_blocked: bool  # the server is not reading the upload: hold the client
    inbuf: bytes  # pipelined bytes not yet read (the short path needs none)
    wbuf: list[bytes]  # response bytes gathered during one server read

    def present(self, ex: Exchange, rh: ResponseHead) -> int: ...
    def flush_client(self) -> None: ...
    def on_interim(self, rh: ResponseHead) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def upstream_eof(self, conn: UpstreamConn) -> None: ...
    def send_error(self, status: int, *, close: bool, data: bytes | None = None) -> None: ...
    def exchange_done(self, status: int, now: float) -> None: ...
    def whole_response_done(self, now: float) -> None: ...
    def tunnel_ended(self) -> None: ...
    def abort(self) -> None: ...
    def maybe_resume(self) -> None: ...
    def pause_reading(self) -> None: ...
    def response_ended(self) -> None: ...
    def in_tunnel(self) -> bool: ...
    def response_until_close(self) -> bool: ...


def ignore(*_args: object, **_kwargs: object) -> None:
    """Any call on a departed client: there is no one left to tell."""


class Departed:
    """The downstream of an exchange whose client has gone (:meth:`Exchange.detach`).

    A connection and its exchange point at each other (``ex.down``, the bound
    framing hooks), so a closed pair would wait for the cycle collector, which on a
    busy listener of short connections costs more CPU than the rest of the close.
    Pointing the exchange here instead lets reference counting free the pair the
    moment the transport lets go. Every flag says "closed, nothing pending" and
    every method does nothing, which is what a closed connection does when a late
    callback reaches it. One per detached exchange: the flags may be written
    (``deadline``, ``up_write_blocked``...) without reaching another exchange."""

    __slots__ = ("client_write_blocked", "close_after", "deadline", "inbuf", "reading_paused", "req_ended",
                 "transport", "up_write_blocked", "wbuf")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.req_ended = True
        self.close_after = True
        self.client_write_blocked = False
        self.reading_paused = False
        self.deadline = 0.0
        self.up_write_blocked = False
        self.inbuf = b""
        self.wbuf: list[bytes] = []  # what a late server read would add: freed with the exchange

    def present(self, ex: Exchange, rh: ResponseHead) -> int:
        from pyvs.upstream.connection import REBUILT  # never on a live path: keep this module types-only

        return REBUILT

    flush_client = on_interim = on_tunnel_data = upstream_eof = send_error = ignore
    exchange_done = whole_response_done = tunnel_ended = abort = ignore
    maybe_resume = pause_reading = response_ended = ignore

    def in_tunnel(self) -> bool:
        return False

    def response_until_close(self) -> bool:
        return False

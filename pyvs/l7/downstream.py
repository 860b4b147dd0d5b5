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

"""One TCP connection to a server, reusable across client requests.

Theory of operation
-------------------
An :class:`UpstreamConn` is either *bound* to one client exchange (``owner`` is the
frontend protocol, and the response reader delivers events straight to it) or *idle*
in its server's pool (``owner`` is None). While idle, any byte or EOF from the
server means the connection cannot be reused: it closes itself and the pool skips
it. The owner receives ``upstream_lost`` if the connection dies while bound, and
write backpressure (``pause_writing``) is forwarded to the owner so it can stop
reading from its client.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from pyvs.http.codec import ResponseReader, ResponseSink

if TYPE_CHECKING:
    from pyvs.runtime.timers import Sweeper
    from pyvs.upstream.server import ServerState


class Owner(ResponseSink, Protocol):
    """What a bound connection reports to (the L7 frontend)."""

    def upstream_ready(self, conn: UpstreamConn) -> None: ...
    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None: ...
    def upstream_eof(self, conn: UpstreamConn) -> None: ...
    def flush_client(self) -> None: ...
    def upstream_write_blocked(self, blocked: bool) -> None: ...
    def upstream_timeout(self, conn: UpstreamConn) -> None: ...


class _NoSink:
    """Sink of an idle connection: a response nobody asked for kills the connection."""

    def __init__(self, conn: UpstreamConn) -> None:
        self.conn = conn

    def on_response_head(self, head: object) -> None:
        self.conn.close()

    def on_response_body(self, data: bytes) -> None:
        self.conn.close()

    def on_response_end(self, trailers: bytes) -> None:
        self.conn.close()


class UpstreamConn(asyncio.Protocol):
    """Client side of a connection to one server."""

    __slots__ = (
        "_nosink",
        "bytes_in",
        "closed",
        "deadline",
        "idle_since",
        "owner",
        "reader",
        "server",
        "sweeper",
        "transport",
        "upgraded",
        "write_blocked",
    )

    def __init__(self, server: ServerState, owner: Owner | None, sweeper: Sweeper) -> None:
        self.server = server
        self.owner = owner
        self.sweeper = sweeper
        self.transport: asyncio.Transport | None = None
        self._nosink = _NoSink(self)
        self.reader = ResponseReader(owner if owner is not None else self._nosink)
        self.bytes_in = 0
        self.closed = False
        self.deadline = 0.0
        self.idle_since = 0.0
        self.write_blocked = False
        self.upgraded = False

    # ---- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.sweeper.add(self)
        if self.owner is not None:
            self.owner.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self.bytes_in += len(data)
        if self.upgraded:
            if owner is not None:
                owner.on_response_body(data)
            return
        if owner is None:
            self.close()
            return
        try:
            offset = self.reader.feed(data)
            owner.flush_client()  # the owner may have released us meanwhile: still flush it
        except Exception as exc:  # ProtocolError or a callback failure: both end the exchange
            owner = self.owner
            self.close()
            if owner is not None:
                owner.upstream_lost(self, exc)
            return
        if offset is not None and self.owner is not None:
            # 101 Switching Protocols: the rest is the tunnelled stream.
            self.upgraded = True
            rest = data[offset:]
            if rest:
                self.owner.on_response_body(rest)

    def eof_received(self) -> bool | None:
        if self.upgraded and self.owner is not None:
            self.owner.upstream_eof(self)
            return True  # keep the half-open tunnel; the owner decides when to close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sweeper.discard(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_blocked = True
        if self.owner is not None:
            self.owner.upstream_write_blocked(True)

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.owner is not None:
            self.owner.upstream_write_blocked(False)

    # ---- used by the owner and the pool ------------------------------------
    def bind(self, owner: Owner) -> None:
        self.owner = owner
        self.bytes_in = 0
        self.reader.sink = owner

    def release(self, now: float) -> bool:
        """Return to the server's idle pool; False (and closed) if the pool is full."""
        self.owner = None
        server = self.server
        if self.closed or len(server.idle) >= server.backend.max_idle:
            self.close()
            return False
        self.reader.sink = self._nosink
        self.bytes_in = 0
        self.idle_since = now
        self.deadline = now + server.backend.idle_timeout
        server.idle.append(self)
        return True

    def on_deadline(self, now: float) -> None:
        owner = self.owner
        if owner is None:
            self.close()  # idle too long in the pool
        else:
            owner.upstream_timeout(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            self.sweeper.discard(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.owner = None
        self.sweeper.discard(self)
        if self.transport is not None:
            self.transport.abort()

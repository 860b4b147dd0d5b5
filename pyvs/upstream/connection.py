"""One TCP connection to a server, reusable across client requests.

Theory of operation
-------------------
An :class:`UpstreamConn` is either *bound* to one client exchange (``owner`` is the
exchange, pyvs.l7.exchange) or *idle* in its server's pool (``owner`` is None). While idle,
any byte or EOF from the server means the connection cannot be reused: it closes
itself and the pool skips it.

While bound it reads one response: the head is found in the byte stream, validated
and digested by :func:`pyvs.http.h1.parse_response_head`, handed to the owner (which
chooses how to present it to its client), and the body is delimited by a framer from
:mod:`pyvs.http.framing` and handed over as raw byte ranges. After the end of the
response, any further byte is a protocol violation: the connection is not reused.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody, LengthBody, UntilClose
from pyvs.http.h1 import CHUNKED, LENGTH, NO_BODY, ResponseHead, parse_response_head

if TYPE_CHECKING:
    from pyvs.runtime.timers import Sweeper
    from pyvs.upstream.server import ServerState

MAX_RESPONSE_HEAD = 65536

# What the owner does with a response (returned by Owner.on_response_head)
RAW = 0  # forward head and body bytes as received
REBUILT = 1  # the owner wrote its own head; forward body bytes as received
DECODE = 2  # the owner wrote its own head; forward the chunked body decoded
ENCODE = 3  # the owner wrote its own head; chunk-encode a body delimited by close
# The owner wrote its own head and transforms the body (Owner.on_body: compression):
# the server's body, decoded from its framing, goes through on_body and the result is
# chunk-encoded for the client (STAGED_CHUNKED) or sent as it is, delimited by the
# close (STAGED_CLOSE, an HTTP/1.0 client). Only responses a filter staged get here.
STAGED = 4
STAGED_CHUNKED = 4
STAGED_CLOSE = 5

Framer = LengthBody | ChunkedBody | UntilClose


class Limits(Protocol):
    """The timeouts that bound one exchange's wait for its server (a route's own, or
    its backend's: resolved at load)."""

    server_timeout: float
    total_timeout: float


class Owner(Protocol):
    """What a bound connection reports to (the L7 exchange, pyvs.l7.exchange.Exchange)."""

    wbuf: list[bytes]
    started: float  # when the exchange began (for the total timeout)

    @property
    def route(self) -> Limits | None: ...  # read only here: a route's or backend's timeouts

    def upstream_ready(self, conn: UpstreamConn) -> None: ...
    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None: ...
    def upstream_eof(self, conn: UpstreamConn) -> None: ...
    def upstream_write_blocked(self, blocked: bool) -> None: ...
    def upstream_timeout(self, conn: UpstreamConn) -> None: ...
    def on_interim(self, rh: ResponseHead) -> None: ...
    def on_response_head(self, rh: ResponseHead) -> int: ...
    def on_response_end(self, conn: UpstreamConn) -> None: ...
    def on_body(self, data: bytes, end: bool) -> bytes: ...  # STAGED modes only
    def on_tunnel_data(self, data: bytes) -> None: ...
    def flush_client(self) -> None: ...

    # True when on_whole_response may take a response read in one piece.
    fast_path: bool

    def on_whole_response(self, conn: UpstreamConn, rh: ResponseHead, data: bytes) -> bool: ...


class UpstreamConn(asyncio.Protocol):
    """Client side of a connection to one server."""

    __slots__ = (
        "bytes_in",
        "closed",
        "deadline",
        "framer",
        "garbage",
        "head_request",
        "idle_since",
        "inbuf",
        "mode",
        "owner",
        "response",
        "server",
        "sweeper",
        "transport",
        "upgraded",
    )

    def __init__(self, server: ServerState, owner: Owner | None, sweeper: Sweeper) -> None:
        self.server = server
        self.owner = owner
        self.sweeper = sweeper
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.deadline = 0.0
        self.idle_since = 0.0
        self.upgraded = False
        self.bytes_in = 0
        self.head_request = False
        self.inbuf = b""
        self.framer: Framer | None = None
        self.response: ResponseHead | None = None
        self.mode = RAW
        self.garbage = False

    # ---- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.sweeper.add(self)
        if self.owner is not None:
            self.owner.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            self.close()  # bytes on an idle connection: it cannot be trusted any more
            return
        self.bytes_in += len(data)
        if self.upgraded:
            owner.on_tunnel_data(data)
            return
        try:
            framer = self.framer
            if framer is None:
                self._head(owner, data)
            else:
                self._body(owner, framer, data, 0, -1)
        except ProtocolError as exc:
            self.close()
            owner.upstream_lost(self, exc)

    def _head(self, owner: Owner, data: bytes) -> None:
        if self.response is not None:
            self.garbage = True  # bytes after a complete response
            return
        if self.inbuf:
            data = self.inbuf + data
            self.inbuf = b""
        pos = 0
        while True:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                rest = data[pos:]
                if len(rest) > MAX_RESPONSE_HEAD:
                    raise ProtocolError("response head too large", 502)
                self.inbuf = rest
                owner.flush_client()
                return
            end += 4
            if end - pos > MAX_RESPONSE_HEAD:
                raise ProtocolError("response head too large", 502)
            rh = parse_response_head(data[pos:end], head_request=self.head_request)
            if rh.status >= 200 or rh.status == 101:
                break
            owner.on_interim(rh)
            pos = end
        self.response = rh
        if rh.framing == LENGTH and pos == 0 and end + rh.length == len(data) and owner.fast_path:
            # The whole response in this one read (the common case for small objects).
            if owner.on_whole_response(self, rh, data):
                return
        mode = self.mode = owner.on_response_head(rh)
        if rh.status == 101:
            self.upgraded = True
            if end < len(data):
                owner.on_tunnel_data(data[end:])
            return
        if rh.framing == NO_BODY:
            if mode == RAW:
                owner.wbuf.append(data if pos == 0 and end == len(data) else data[pos:end])
            elif mode >= STAGED:  # a 304 a stage turns into the stored response (the cache)
                self.staged_out(owner, owner.on_body(b"", True), True)
            if end < len(data):
                self.garbage = True
            self._end(owner)
            return
        framer: Framer
        if rh.framing == LENGTH:
            framer = LengthBody(rh.length)
        elif rh.framing == CHUNKED:
            framer = ChunkedBody(decode=mode == DECODE or mode >= STAGED)
        else:
            framer = UntilClose()
        self.framer = framer
        self._body(owner, framer, data, end, pos if mode == RAW else end)

    def _body(self, owner: Owner, framer: Framer, data: bytes, pos: int, out_from: int) -> None:
        end, done = framer.feed(data, pos)
        mode = self.mode
        if mode == DECODE:
            assert isinstance(framer, ChunkedBody)
            owner.wbuf += framer.decoded
            framer.decoded.clear()
            if done and framer.trailers:
                # An HTTP/2 client's exchange takes them (pyvs.h2.stream.H2Exchange: a
                # trailing HEADERS frame); an HTTP/1.0 client's cannot.
                take = getattr(owner, "on_trailers", None)
                if take is not None:
                    take(framer.trailers)
        elif mode >= STAGED:
            if isinstance(framer, ChunkedBody):
                piece = b"".join(framer.decoded)
                framer.decoded.clear()
            else:
                piece = data[pos:end]
            self.staged_out(owner, owner.on_body(piece, done), done)
        else:
            start = pos if out_from < 0 else out_from
            if end > start:
                piece = data if start == 0 and end == len(data) else data[start:end]
                if self.mode == ENCODE:
                    owner.wbuf += (b"%x\r\n" % len(piece), piece, b"\r\n")
                else:
                    owner.wbuf.append(piece)
        if done:
            if end < len(data):
                self.garbage = True
            self._end(owner)
        else:
            owner.flush_client()
            if self.deadline:  # the server timeout bounds each wait for the next read
                limits = owner.route  # the route's timeouts (its own, else the backend's)
                assert limits is not None
                deadline = self.sweeper.loop.time() + limits.server_timeout
                if limits.total_timeout:
                    deadline = min(deadline, owner.started + limits.total_timeout)
                self.deadline = deadline

    def trailer_lines(self) -> bytes:
        """The trailer section of the chunked body just read (CRLF-terminated field
        lines; empty without one), for a staged body's end (Exchange._staged_trailers)."""
        framer = self.framer
        return framer.trailers if isinstance(framer, ChunkedBody) else b""

    def staged_out(self, owner: Owner, out: bytes, done: bool) -> None:
        """Queue a staged body's output for the client in the framing chosen for it."""
        if self.mode == STAGED_CHUNKED:
            if out:
                owner.wbuf += (b"%x\r\n" % len(out), out, b"\r\n")
            if done:
                owner.wbuf.append(b"0\r\n\r\n")
        elif out:
            owner.wbuf.append(out)

    def _end(self, owner: Owner) -> None:
        self.framer = None
        owner.on_response_end(self)

    @property
    def reusable(self) -> bool:
        """The response just ended cleanly and the server allows another request."""
        rh = self.response
        return rh is not None and rh.keep_alive and not self.garbage and not self.closed and not self.upgraded

    def start_response(self, head_request: bool) -> None:
        """Prepare to read the response to a request just written."""
        self.head_request = head_request
        self.response = None
        self.framer = None
        self.inbuf = b""
        self.garbage = False
        self.bytes_in = 0

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
            if exc is None and self.mode >= STAGED and type(self.framer) is UntilClose:
                # The close ends a staged body the server delimits by it: the stages'
                # last output, then the end of the response (unstaged: the owner's).
                self.staged_out(owner, owner.on_body(b"", True), True)
                self._end(owner)
                self.owner = None
                return
            self.owner = None
            owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_write_blocked(True)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_write_blocked(False)

    # ---- used by the owner and the pool ------------------------------------
    def release(self, now: float) -> bool:
        """Return to the server's idle pool; False (and closed) if it cannot be reused.

        A full pool makes room by closing its least recently used connection, as
        nginx's keepalive cache does. (Closing this one instead would leave a pool of
        stale connections that an unsafe request may not take, because they have been
        idle too long: every POST would then open and close a connection of its own
        until they expire.)"""
        self.owner = None
        server = self.server
        max_idle = server.backend.max_idle
        if not self.reusable or not max_idle:
            self.close()
            return False
        idle = server.idle
        if len(idle) >= max_idle:
            idle.pop(0).close()
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

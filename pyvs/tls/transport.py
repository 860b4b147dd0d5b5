"""The TLS server side of a connection: uvloop's SSL protocol, with three corrections.

Theory of operation
-------------------
uvloop runs TLS in its ``SSLProtocol`` (Cython): the TCP transport feeds it bytes,
it drives an :class:`ssl.SSLObject` over memory BIOs and presents the application
protocol (:class:`~pyvs.tls.conn.TlsConnection`, or HTTP/2 after ALPN) with a
transport of plain bytes. It is fast, but three of its choices hurt a proxy:

1. **A failed handshake is closed without its alert.** OpenSSL writes the alert
   (``protocol_version`` for a TLS 1.0 client, ``unrecognized_name`` from our SNI
   callback, ``unknown_ca`` for a bad client certificate...) into the outgoing BIO
   and fails ``do_handshake``; uvloop then force-closes the socket without sending
   what the BIO holds, and the client only sees the connection drop.
   :meth:`ServerSSLObject.do_handshake` keeps the first failure, answers "want read"
   once, so uvloop flushes the BIO (the alert leaves), and raises the failure on the
   next call: when the client, having read the alert, closes (or at the handshake
   timeout). A failure with nothing to send fails at once, as before.

2. **A client's close_notify ends the connection at once.** A client that sends its
   request and then closes its side of TLS (``close_notify``, often followed by a TCP
   FIN) still reads the answer -- plain HTTP/1 serves such a client, and so do HAProxy
   and nginx. uvloop instead starts its own shutdown and drops every later write.
   :meth:`ServerSSLObject.read` hands the close_notify to the connection (the
   ``pyvs_close_notify`` hook) instead of reporting it to uvloop; the connection then
   acts as HTTP/1 does on a half-close: answer the request under way, then close.

3. **A TCP FIN closes at once** (:meth:`ServerSSL.eof_received`): the connection
   decides instead (the hook ``tls_eof``), the same way. When the peer never sent
   close_notify, our own shutdown does not wait for it (``pyvs_peer_eof``) -- there
   is nothing left to read -- so the socket closes as soon as the answer and our
   close_notify are written.

A connection that does not take a hook (HTTP/2 after hand-over, a connection
already closing) gets uvloop's behaviour unchanged.

The listening socket is served without ``ssl=``: the protocol factory built by
:func:`server_factory` wraps each application protocol in a :class:`ServerSSL`
itself. That also saves the future uvloop creates per connection to learn of the
handshake's end (a failed handshake closes the transport from inside the protocol).

The same object sends the TLS 1.3 session tickets with the first response rather
than right after the handshake (``pyvs_tickets``, :func:`pyvs.tls.tickets.defer`): one
write system call less per connection.

Failed handshakes are counted by :meth:`ServerSSL.connection_lost` (a connection
that ends before its application protocol was made), with the reason of
:func:`pyvs.tls.stats.reason_of`; completed ones by :mod:`pyvs.tls.conn`.

Costs on the data path: ``read`` is a Python method either way (ssl.SSLObject's is
one too); ``write`` and ``pending`` are bound straight to the C methods on each new
object, one Python frame less per call than :class:`ssl.SSLObject`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from pyvs.tls.stats import TlsStats
from pyvs.tls.tickets import queue

log = logging.getLogger("pyvs.tls")

# The uvloop versions whose SSLProtocol this module was written against (pyproject pins
# the same range). Another one: TLS by create_server(ssl=...), without the corrections.
TESTED = ((0, 23), (0, 23))
try:
    from importlib.metadata import version as _dist_version

    from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]

    _have = _dist_version("uvloop")
    _version = tuple(int(x) for x in _have.split(".")[:2])
    WHY_NOT = "" if TESTED[0] <= _version <= TESTED[1] else f"uvloop {_have} is not a tested version"
except (ImportError, ValueError) as _exc:  # pragma: no cover - depends on the install
    SSLProtocol = object
    WHY_NOT = f"uvloop's SSLProtocol is not available ({_exc})"
_warned = False
_created: ServerSSLObject | None = None  # the SSLObject made last (see ServerSSL.connection_made)


def usable() -> bool:
    """Whether the corrected protocol may be used (said once per process when not)."""
    global _warned
    if WHY_NOT and not _warned:
        _warned = True
        log.warning("TLS: %s; uvloop's own TLS is used (refused handshakes get no alert, a client that "
                    "half-closes gets no answer, TLS 1.3 tickets leave in a packet of their own)", WHY_NOT)
    return not WHY_NOT


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


class ServerSSLObject(ssl.SSLObject):
    """The SSLObject of a server connection (see corrections 1 and 2)."""

    # Class defaults; an instance sets what it needs (SSLObject has a __dict__, where
    # the SNI callback also leaves pyvs_sni / pyvs_cert).
    pyvs_failed: ssl.SSLError | None = None
    pyvs_close_notify: Callable[[], bool] | None = None
    pyvs_peer_eof = False
    pyvs_notified = False  # the connection took the client's close_notify
    pyvs_tickets = 0  # TLS 1.3 tickets to queue at the first read (pyvs.tls.tickets.queue)
    pyvs_out: ssl.MemoryBIO

    @classmethod
    def _create(cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                server_hostname: str | None = None, session: ssl.SSLSession | None = None,
                context: ssl.SSLContext | None = None) -> ServerSSLObject:
        self = super()._create(incoming, outgoing, server_side, server_hostname,  # type: ignore[misc]
                               session, context)
        self.pyvs_out = outgoing
        global _created
        _created = self  # (taken by ServerSSL.connection_made, which is creating us)
        c = self._sslobj
        # ssl.SSLObject.write/pending only call these: skip that frame.
        self.write = c.write
        self.pending = c.pending
        return self  # type: ignore[no-any-return]

    def do_handshake(self) -> None:
        failed = self.pyvs_failed
        if failed is not None:
            raise failed
        try:
            self._sslobj.do_handshake()  # type: ignore[attr-defined]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if not self.pyvs_out.pending:
                raise
            self.pyvs_failed = exc  # correction 1: let uvloop send the alert first
            raise _want_read() from None

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        v = self._sslobj.read(len, buffer) if buffer is not None else self._sslobj.read(len)  # type: ignore[attr-defined]
        if not v:
            if self.pyvs_notified:  # (bytes after the close_notify: ignored, RFC 8446 6.1)
                raise _want_read()
            hook = self.pyvs_close_notify
            if hook is not None and hook():  # correction 2: the connection takes it
                self.pyvs_close_notify = None
                self.pyvs_notified = True
                raise _want_read()
        elif self.pyvs_tickets:
            # Queued now, after the read that brought the first request: OpenSSL writes
            # them in front of the response (an SSL_read would write them at once).
            n, self.pyvs_tickets = self.pyvs_tickets, 0
            try:
                queue(self, n)
            except (RuntimeError, TypeError):  # (checked at start; never fail a connection for it)
                pass
        return v

    def unwrap(self) -> None:
        try:
            self._sslobj.shutdown()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            if not self.pyvs_peer_eof:
                raise
            # correction 3: our close_notify is written; the peer's cannot come any more


class ServerSSL(SSLProtocol):  # type: ignore[misc]
    """uvloop's SSL protocol with correction 3 (see the module docstring), and the
    count of failed handshakes (pyvs/tls/stats.py)."""

    __slots__ = ("pyvs_app", "pyvs_obj", "pyvs_stats")
    pyvs_app: asyncio.BaseProtocol | None
    pyvs_obj: ServerSSLObject | None  # this connection's SSLObject (uvloop keeps its own out of reach)
    pyvs_stats: TlsStats | None

    def connection_made(self, transport: Any) -> None:
        global _created
        try:
            super().connection_made(transport)  # (makes the SSLObject: ServerSSLObject._create)
        finally:  # (even if it fails: never leave one behind for the next connection)
            self.pyvs_obj, _created = _created, None

    def connection_lost(self, exc: Exception | None) -> None:
        app, obj = self.pyvs_app, self.pyvs_obj
        self.pyvs_app = self.pyvs_obj = None
        st = self.pyvs_stats
        if st is not None and getattr(app, "tls", True) is None:
            # Never handed to the application: the handshake failed. Its reason is the
            # error kept for the alert (correction 1) when there was one: the connection
            # itself then ends with the client's EOF, or at the timeout.
            failed = obj.pyvs_failed if obj is not None else None
            st.failure(failed if failed is not None else exc)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        hook = getattr(self.pyvs_app, "tls_eof", None)
        if hook is not None and hook():
            return True  # the connection closes once its answer is written
        return super().eof_received()  # type: ignore[no-any-return]


def prepare(ctx: ssl.SSLContext) -> None:
    """Make ``ctx`` create :class:`ServerSSLObject` objects."""
    ctx.sslobject_class = ServerSSLObject


def server_factory(factory: Callable[[], asyncio.Protocol], ctx: ssl.SSLContext, loop: asyncio.AbstractEventLoop,
                   handshake_timeout: float, stats: TlsStats | None = None) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory for a plain listening socket that speaks TLS with ``ctx``
    around the protocols of ``factory``; failed handshakes are counted in ``stats``."""

    def make() -> ServerSSL:
        app = factory()
        proto = ServerSSL(loop, app, ctx, None, server_side=True, ssl_handshake_timeout=handshake_timeout)
        proto.pyvs_app = app
        proto.pyvs_stats = stats
        proto.pyvs_obj = None  # (connection_lost may come without connection_made)
        return proto

    return make

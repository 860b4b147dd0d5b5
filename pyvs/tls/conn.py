"""A TLS client connection: its facts, and the SNI/Host rule.

Theory of operation
-------------------
uvloop does the handshake before the protocol hears of the connection, so when
:meth:`TlsConnection.connection_made` runs the version, the cipher and the SNI
callback's choice (left on the ``SSLObject`` by :meth:`pyvs.tls.server.TlsServer.on_sni`)
are all known. :class:`TlsFacts` keeps the ``SSLObject`` and turns a fact into
bytes only when a route condition, a ``%{tls_*}`` variable or the client-subject
header asks; a connection whose routes ask nothing pays for nothing but the object.

The exchange's :class:`~pyvs.l7.request.RequestView` is swapped for a
:class:`TlsRequestView` that carries the facts (``view.tls``): route conditions
see only the view. On a plain listener the view has no ``tls`` and TLS
conditions are false.

The SNI/Host rule (``tls.check_host``, RFC 9110 7.4 and the 421 status of
RFC 9110 15.5.20): a browser reuses a connection for every name the certificate
covers. A request whose Host the certificate chosen by SNI does *not* cover was
sent on the wrong connection -- or is an attempt to reach a virtual host behind a
certificate it does not have -- and is answered 421 Misdirected Request, which
tells a browser to retry on a new connection. A connection without SNI (a client
that asked by address) is not checked: there was no name to compare with.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvs.l7.h1conn import H1Connection
from pyvs.l7.request import RequestView, normalise_host
from pyvs.tls.stats import TlsStats

if TYPE_CHECKING:
    from pyvs.config.tls_schema import TlsListener
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.tls.server import TlsServer

# Short names of RFC 4514 for the attributes getpeercert() spells out.
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "stateOrProvinceName": "ST", "localityName": "L", "streetAddress": "STREET", "domainComponent": "DC",
    "userId": "UID",
}
_ESCAPE = frozenset(',+"\\<>;=')


def rfc4514(subject: Any) -> str:
    """A subject as ``getpeercert()`` gives it, as an RFC 4514 string (most specific
    first: ``CN=alice,O=Example,C=FR``). Special characters are escaped with a
    backslash; control and non-ASCII characters as ``\\XX`` hex pairs, so the value
    can never break a header line."""
    rdns = []
    for rdn in reversed(subject or ()):
        parts = []
        for name, value in rdn:
            out = []
            for i, ch in enumerate(str(value)):
                if ch in _ESCAPE or (ch in " #" and i == 0) or (ch == " " and i == len(value) - 1):
                    out.append("\\" + ch)
                elif not " " <= ch <= "~":
                    out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
                else:
                    out.append(ch)
            parts.append(f"{_SHORT.get(name, name)}={''.join(out)}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


class TlsEndpoint:
    """What a worker's TLS listener needs at accept and per request."""

    __slots__ = ("check_host", "context", "handshake_timeout", "server", "stats", "subject_header", "tickets")

    def __init__(self, cfg: TlsListener) -> None:
        self.server: TlsServer = cfg.server
        self.context: ssl.SSLContext = self.server.front
        self.tickets = self.server.queued_tickets  # TLS 1.3 tickets to queue per connection
        self.check_host = cfg.check_host
        self.handshake_timeout = cfg.handshake_timeout
        self.subject_header = cfg.client_subject_header if cfg.client_ca is not None else None
        self.stats = TlsStats(count_alpn=len(cfg.alpn) > 1)  # this worker's counters (pyvs/tls/stats.py)

    def protocol(self, lst: ListenerRuntime) -> TlsConnection:
        return TlsConnection(lst)

    def serve(self, factory: Callable[[], asyncio.Protocol],
              loop: asyncio.AbstractEventLoop) -> tuple[Callable[[], asyncio.BaseProtocol], ssl.SSLContext | None]:
        """The factory to give ``create_server``, and its ``ssl=``: TLS by
        :mod:`pyvs.tls.transport` around the protocols of ``factory`` (no ``ssl=``),
        else, with an uvloop it was not written for, uvloop's own TLS."""
        from pyvs.tls import transport

        if not transport.usable():
            for ctx in self.server.contexts:  # OpenSSL sends the TLS 1.3 tickets itself (none were deferred)
                ctx.num_tickets = 2
            self.tickets = 0
            return factory, self.context
        transport.prepare(self.context)
        return transport.server_factory(factory, self.context, loop, self.handshake_timeout, self.stats), None


class TlsFacts:
    """One TLS connection's facts, as bytes. The cipher is computed on first use; the
    version and the client's subject are read at once, because OpenSSL answers neither
    while TLS 1.3 tickets are queued (pyvs/tls/transport.py: from the first read to the
    first response, the connection counts as "in handshake" again)."""

    __slots__ = ("_cipher", "_subject", "_version", "cert", "endpoint", "sni", "sslobj")

    def __init__(self, endpoint: TlsEndpoint, sslobj: Any) -> None:
        self.endpoint = endpoint
        self.sslobj = sslobj
        name = getattr(sslobj, "pyvs_sni", None)
        self.sni = name.lower().rstrip(".").encode("ascii", "replace") if name else b""
        cert = getattr(sslobj, "pyvs_cert", None)
        self.cert: int | None = cert if cert is not None else endpoint.server.default
        self._version: bytes | None = (sslobj.version() or "").encode()
        self._cipher: bytes | None = None
        self._subject: bytes | None = None
        if endpoint.subject_header is not None:  # mTLS: the subject goes to every request
            self._subject = self._peer_subject()

    @property
    def version(self) -> bytes:
        """``TLSv1.2`` / ``TLSv1.3``."""
        v = self._version
        if v is None:
            v = self._version = (self.sslobj.version() or "").encode()
        return v

    @property
    def cipher(self) -> bytes:
        """The OpenSSL name of the suite, e.g. ``TLS_AES_128_GCM_SHA256``."""
        c = self._cipher
        if c is None:
            info = self.sslobj.cipher()
            c = self._cipher = info[0].encode() if info else b""
        return c

    @property
    def client_subject(self) -> bytes:
        """The verified client certificate's subject (RFC 4514), empty without one."""
        s = self._subject
        if s is None:
            s = self._subject = self._peer_subject()
        return s

    def _peer_subject(self) -> bytes:
        try:
            peer = self.sslobj.getpeercert()
        except ValueError:
            peer = None
        return rfc4514(peer.get("subject")).encode("ascii") if peer else b""

    def misdirected(self, host: bytes | None) -> bool:
        """The SNI/Host rule (see the module docstring): True means answer 421."""
        sni = self.sni
        if not sni or not self.endpoint.check_host or self.cert is None:
            return False
        h = normalise_host(host)
        if h == sni or not h:
            return False
        return not self.endpoint.server.certs[self.cert].covers(h.decode("latin-1"))


class TlsRequestView(RequestView):
    """The request view of a TLS connection: the same facts plus ``tls``."""

    __slots__ = ("tls",)

    def __init__(self, tls: TlsFacts | None) -> None:
        super().__init__()
        self.tls = tls


class TlsConnection(H1Connection):
    """An HTTP/1 connection over TLS: the facts are taken when it is accepted.

    A client that closes its side (close_notify, or a TCP FIN) after its request gets
    the answer, as over plain TCP: pyvs.tls.transport hands both to this connection
    (``_close_notify``, ``tls_eof``) instead of letting uvloop close at once."""

    peer_done = False  # the client sent close_notify or FIN (decided once)

    def connection_made(self, transport: Any) -> None:
        endpoint = self.lst.tls
        sslobj = transport.get_extra_info("ssl_object")
        if endpoint is not None and sslobj is not None:
            facts = TlsFacts(endpoint, sslobj)
            self.tls = facts
            st = endpoint.stats  # the handshake is done: count it (pyvs/tls/stats.py)
            st.handshakes += 1
            c = sslobj._sslobj  # (the C object: ssl.SSLObject's property and method only forward)
            if c.session_reused:
                st.resumed += 1
            if facts._version == b"TLSv1.3":
                st.tls13 += 1
            if st.count_alpn:
                alpn = c.selected_alpn_protocol()
                if alpn == "h2":
                    st.alpn_h2 += 1
                elif alpn is not None:
                    st.alpn_http11 += 1
            self.ex.view = TlsRequestView(facts)
            sslobj.pyvs_close_notify = self._close_notify  # (pyvs.tls.transport.ServerSSLObject)
            # TLS 1.3 tickets: queued at the first read, sent with the first response (one
            # write less per connection; pyvs/tls/transport.py, pyvs/tls/tickets.py).
            sslobj.pyvs_tickets = endpoint.tickets
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        tls = self.tls
        if tls is not None:
            tls.sslobj.pyvs_close_notify = None  # (no reference cycle left behind)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """uvloop's own EOF path (a close_notify while pyvs is closing): uvloop ignores
        "keep the write side open" there (and warns), so never ask for it."""
        super().eof_received()
        return None

    def _close_notify(self) -> bool:
        """The client sent close_notify; False: let uvloop handle it (closing anyway)."""
        if self.closed:
            return False
        self._peer_closed()
        return True

    def tls_eof(self) -> bool:
        """The client's TCP FIN; True: keep the connection until the answer is out."""
        tls = self.tls
        if self.closed or self.transport is None or tls is None:
            return False
        tls.sslobj.pyvs_peer_eof = True  # our shutdown will not wait for its close_notify
        self._peer_closed()
        return True

    def _peer_closed(self) -> None:
        if not self.peer_done:
            self.peer_done = True
            # After the bytes read with it reach data_received (uvloop delivers them
            # after the read that found the close_notify, or in a callback queued
            # at the end of the handshake).
            self.loop.call_soon(self._half_closed)

    def _half_closed(self) -> None:
        """What HTTP/1 does on a half-close: answer the request under way, then close;
        close at once when there is none."""
        if not self.closed and not H1Connection.eof_received(self):
            self._close()


def facts_of(view: object) -> TlsFacts | None:
    """The TLS facts of a request view (None on a plain connection)."""
    return getattr(view, "tls", None)

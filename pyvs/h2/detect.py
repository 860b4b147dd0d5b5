"""Which protocol a client connection speaks: HTTP/1.1, or HTTP/2 handed over.

Theory of operation
-------------------
A listener that serves HTTP/2 (``http2: true``, or ``h2`` in ``tls.alpn``) still
accepts every connection as an :class:`~pyvs.l7.h1conn.H1Connection` subclass, so the
accept path (client counting, PROXY-free plain listeners, TLS facts) is the one of
HTTP/1. Then:

- on a plain listener, :class:`PriorKnowledge` looks at the first bytes of the
  connection only: the client preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``
  (RFC 9113 3.3, "prior knowledge") hands the connection over; anything else is
  HTTP/1 from then on (one flag test per read on such listeners, nothing on others);
- on a TLS listener, :class:`AlpnConnection` reads the protocol ALPN chose when the
  handshake is done (``connection_made``) and hands over when it is ``h2``.

:func:`hand_over` replaces the transport's protocol by an
:class:`~pyvs.h2.conn.H2ServerConnection` that takes the client's facts (address,
trust, TLS) and its place in ``max_client_connections``. The worker imports this
module only for listeners that serve HTTP/2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvs.h2.conn import H2ServerConnection
from pyvs.h2.settings import serves_h2
from pyvs.l7.h1conn import HEAD, H1Connection
from pyvs.tls.conn import TlsConnection, TlsRequestView

if TYPE_CHECKING:
    from pyvs.l7.listener import ListenerRuntime

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def hand_over(h1: H1Connection, data: bytes) -> H2ServerConnection | None:
    """Make an accepted connection an HTTP/2 one; ``data``: bytes already read."""
    t = h1.transport
    if t is None or h1.closed:
        return None
    w = h1.worker
    w.connections.discard(h1)
    w.sweeper.discard(h1)
    h1.closed = True
    conn = H2ServerConnection(h1.lst, h1.ex, h1.tls, TlsRequestView if h1.tls is not None else None,
                              h1.client_key)
    h1.client_key = None
    h1.inbuf = b""
    h1.ex.detach()  # the template keeps the client's facts, not the h1 connection (no cycle)
    if h1.tls is not None:  # the h1 connection's close_notify hook goes with it (no cycle left)
        h1.tls.sslobj.pyvs_close_notify = None
    t.set_protocol(conn)
    conn.connection_made(t)
    if data:
        conn.data_received(data)
    return conn


class PriorKnowledge(H1Connection):
    """A plain connection that may start with the HTTP/2 client preface (h2c)."""

    sniffing = True

    def data_received(self, data: bytes) -> None:
        if self.sniffing and self.phase == HEAD:
            buf = self.inbuf + data if self.inbuf else data
            if buf[:24] == PREFACE:
                hand_over(self, buf)
                return
            if len(buf) < 24 and PREFACE.startswith(buf):
                self.inbuf = buf  # the preface may come in pieces
                return
            self.sniffing = False  # HTTP/1 (what inbuf holds is read with data)
        super().data_received(data)


class AlpnConnection(TlsConnection):
    """A TLS connection that becomes HTTP/2 when the client chose ``h2`` by ALPN."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
            hand_over(self, b"")


def protocol_factory(lst: ListenerRuntime) -> Callable[[], H1Connection] | None:
    """The listener's protocol factory when it serves HTTP/2, else None."""
    if not serves_h2(lst.cfg):
        return None
    if lst.tls is not None:
        return lambda: AlpnConnection(lst)
    return lambda: PriorKnowledge(lst)

"""The HTTP/2 connections of a worker to its ``proto: h2`` servers (pyvs/h2/upstream.py).

One :class:`H2Pool` per server and worker: the connection is opened on first use by
one connect task that every exchange waiting for it shares (``asyncio.shield``: one
exchange's timeout does not cancel the others' connect), and replaced when the
server sends GOAWAY or its stream limit is reached. Over TLS the pool has a context
of its own offering only ``h2`` by ALPN; a server that chooses anything else fails
the connect (the exchange retries elsewhere or answers 502).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from pyvs.h2.upstream import H2ClientConnection, H2UpstreamStream
from pyvs.tls.client import client_context, connect
from pyvs.upstream.connection import Owner, UpstreamConn

if TYPE_CHECKING:
    from pyvs.config.tls_schema import ServerTls
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.upstream.server import ServerState


class H2Pool:
    """The HTTP/2 connection of one worker to one server."""

    def __init__(self, server: ServerState, worker: WorkerRuntime, tls: ServerTls | None) -> None:
        self.server = server
        self.worker = worker
        self.tls = tls is not None
        # TLS: a context of its own that offers only h2 by ALPN (the server's shared
        # context offers http/1.1, for its health checks).
        self.context: ssl.SSLContext | None = None
        self.sni: str | None = None
        if tls is not None:
            self.context = client_context(tls.verify, tls.ca, tls.cert, tls.key)
            self.context.set_alpn_protocols(["h2"])
            self.sni = tls.sni or server.host
        self.conn: H2ClientConnection | None = None
        self.connecting: asyncio.Task[H2ClientConnection] | None = None

    def stream(self, owner: Owner) -> H2UpstreamStream:
        return H2UpstreamStream(self, owner)

    async def attach(self, st: UpstreamConn) -> None:
        """Wait for the server connection (opened once for every waiting stream), then
        bind the stream to it: the exchange's ``upstream_ready`` runs from here."""
        assert isinstance(st, H2UpstreamStream)
        conn = self.conn
        while conn is None or conn.full():
            task = self.connecting
            if task is None:
                task = self.connecting = self.worker.loop.create_task(self._connect())
            conn = await asyncio.shield(task)
            if st.owner is None or st.closed:
                return
            # Woken with every other stream that waited for this connect: those bound
            # before us may have filled it (a server with a small stream limit).
        if st.owner is not None and not st.closed:
            st.bind(conn)

    async def _connect(self) -> H2ClientConnection:
        server = self.server
        try:
            if self.context is None:
                _, proto = await connect(self.worker.loop, lambda: H2ClientConnection(self), server)
            else:
                t, proto = await self.worker.loop.create_connection(
                    lambda: H2ClientConnection(self), server.host, server.port, ssl=self.context,
                    server_hostname=self.sni)
                sslobj = t.get_extra_info("ssl_object")
                if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                    t.abort()
                    raise ConnectionError(f"server {server.backend.name}/{server.name} did not choose h2 by ALPN")
        finally:
            self.connecting = None
        assert isinstance(proto, H2ClientConnection)
        old = self.conn
        self.conn = proto
        if old is not None and old is not proto:
            # Replaced (its stream limit was reached): it takes no new stream, and closes
            # with its last one (H2UpstreamStream._forget), now if it has none.
            old.goaway = True
            if not old.streams and not old.pending:
                old._close(None)
        return proto

    def close(self) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.close()


def build_pools(worker: WorkerRuntime) -> dict[ServerState, H2Pool]:
    """A pool for every server with ``proto: h2`` (or ``h2c``) of the worker's backends."""
    pools: dict[ServerState, H2Pool] = {}
    for backend in worker.backends.values():
        for server in backend.servers:
            cfg = backend.cfg.servers[server.index] if server.index >= 0 else None
            if cfg is not None and cfg.proto != "http1":
                pools[server] = H2Pool(server, worker, cfg.tls)
    return pools

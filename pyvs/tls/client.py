"""TLS towards servers: ``servers[].tls`` contexts, shared by proxied connections and
health checks.

A server's context is built once while the configuration is loaded (so ``pyvs
check`` refuses an unreadable CA or client certificate), in the supervisor, and is
inherited by the workers. With ``verify`` (the default) the server's certificate
must chain to ``ca`` (else the system's trust store) and name the ``sni`` name
(else the server's host when it is a name; an address is checked against the
certificate's IP entries). ``cert``/``key`` present a client certificate to
servers that ask for one (mTLS towards the back end).

Health checks run in the supervisor and know a server only by backend and server
name: :data:`BY_SERVER` maps those (and the address) to the server's settings, so an
``http`` check of a TLS server speaks TLS with the very same context. It is filled
when a configuration is validated and published again by the supervisor after each
reload (a refused reload must not leave its entries behind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How pyvs speaks TLS to one server."""

    context: ssl.SSLContext
    sni: str | None  # server_hostname for the handshake (None: no SNI, e.g. an IP)


def client_context(verify: bool, ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client context; ValueError naming the key (``ca: ...``) on a bad file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        try:
            if ca is not None:
                ctx.load_verify_locations(cafile=ca)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca: cannot load {ca}: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        from pyvs.tls import certs  # (cryptography only for a config that needs it)

        try:
            certs.load(cert, key, None, ctx)
        except ValueError as exc:
            raise ValueError(f"cert: {exc}") from None
    return ctx


def server_name(sni: str | None, host: str) -> str | None:
    """The name sent as SNI and checked against the certificate: ``sni``, else the
    server's host (an IP address is checked but never sent as SNI: Python does that)."""
    if sni:
        return sni
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return host  # ssl checks an IP against the certificate's IP SANs and sends no SNI


# (backend, server) -> its TLS, for health checks (see the module docstring).
BY_SERVER: dict[tuple[str, str], ClientTls] = {}


def remember(servers: list[tuple[str, str, ssl.SSLContext, str | None, str]]) -> None:
    """Add the TLS servers of a configuration just validated: (backend, server,
    context, sni, address)."""
    for b, s, ctx, sni, address in servers:
        host = address.rpartition(":")[0].strip("[]")
        BY_SERVER[(b, s)] = ClientTls(ctx, server_name(sni, host))


def publish(servers: list[tuple[str, str, ssl.SSLContext, str | None, str]]) -> None:
    """Exactly the TLS servers of the running configuration (after a reload, so that
    a refused configuration leaves nothing behind)."""
    BY_SERVER.clear()
    remember(servers)


def of_config(cfg: Any) -> list[tuple[str, str, ssl.SSLContext, str | None, str]]:
    """The (backend, server, context, sni, address) of every TLS server of ``cfg``."""
    return [(b.name, s.name, s.tls.context, s.tls.sni, s.address) for b in cfg.backends for s in b.servers
            if s.tls is not None]


def connect(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
            server: Any) -> Coroutine[Any, Any, Any]:
    """Open a connection to ``server`` (a pyvs.upstream.server.ServerState): TLS when its
    configuration has ``tls``, else plain TCP. The handshake is part of the connect,
    bounded by the same connect timeout (the exchange cancels the whole task)."""
    tls = server.backend.cfg.servers[server.index].tls if server.index >= 0 else None
    if tls is None:
        return loop.create_connection(factory, server.host, server.port)
    return loop.create_connection(factory, server.host, server.port, ssl=tls.context,
                                  server_hostname=tls.sni or server.host)

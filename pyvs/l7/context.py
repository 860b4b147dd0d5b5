"""What an exchange tells the parts around it: template variables and the facts a
hashing scheduler reads.

Kept apart from :mod:`pyvs.l7.exchange` so that the exchange module holds only the
request's way, and so that the list of ``%{name}`` variables (documented in
docs/routing.md) is in one place: :mod:`pyvs.l7.filters.variables` refuses names
that are not keys of :data:`VARIABLES`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvs.balance.base import PickContext

if TYPE_CHECKING:
    from pyvs.http.h1 import RequestHead
    from pyvs.l7.exchange import Exchange


def _client_ip(ex: Exchange) -> bytes:
    return ex.view.client_ip  # the peer, or the client a trusted proxy names


def _request_id(ex: Exchange) -> bytes:
    return ex.request_id()


def _host(ex: Exchange) -> bytes:
    head = ex.head
    return head.host or b"" if head is not None else b""


def _method(ex: Exchange) -> bytes:
    return ex.head.method if ex.head is not None else b""


def _path(ex: Exchange) -> bytes:
    return ex.view.path


def _query(ex: Exchange) -> bytes:
    return ex.view.query


def _scheme(ex: Exchange) -> bytes:
    return ex.lst.scheme


def _start_ms(ex: Exchange) -> bytes:
    """Wall-clock milliseconds when the request started (as X-Request-Start wants)."""
    return b"%d" % int((time.time() - (ex.loop.time() - ex.started)) * 1000)


def _server(ex: Exchange) -> bytes:
    return ex.server.name.encode() if ex.server is not None else b""


def _backend(ex: Exchange) -> bytes:
    return ex.backend.name.encode() if ex.backend is not None else b""


def _route(ex: Exchange) -> bytes:
    rt = ex.route
    return rt.name.encode() if rt is not None else b""


def _vhost(ex: Exchange) -> bytes:
    rt = ex.route
    return rt.vhost.encode() if rt is not None and rt.vhost else b""


def _listener(ex: Exchange) -> bytes:
    return ex.lst.name.encode()


def _tls(fact: str) -> Callable[[Exchange], bytes]:
    """A variable of the client's TLS connection (empty on a plain one)."""

    def get(ex: Exchange) -> bytes:
        tls = getattr(ex.view, "tls", None)
        return getattr(tls, fact) if tls is not None else b""

    return get


VARIABLES: dict[str, Callable[[Exchange], bytes]] = {
    "client_ip": _client_ip,
    "request_id": _request_id,
    "host": _host,
    "method": _method,
    "path": _path,
    "query": _query,
    "scheme": _scheme,
    "start_ms": _start_ms,
    "server": _server,
    "backend": _backend,
    "route": _route,
    "vhost": _vhost,
    "listener": _listener,
    "tls_version": _tls("version"),
    "tls_cipher": _tls("cipher"),
    "tls_sni": _tls("sni"),
    "tls_client_subject": _tls("client_subject"),
}


def real_client(xff: bytes | None, peer: bytes) -> bytes:
    """The client address a trusted proxy vouches for: the last X-Forwarded-For entry
    (the one that proxy added), when it is an IP address; else the peer itself. Used
    for ``source`` conditions, ACLs and ``%{client_ip}`` (as nginx's realip module);
    the X-Forwarded-For sent on keeps the whole chain."""
    if not xff:
        return peer
    last = xff.rsplit(b",", 1)[-1].strip()
    if last.startswith(b"[") and b"]" in last:  # "[2001:db8::1]:4711"
        last = last[1:last.index(b"]")]
    elif last.count(b":") == 1:  # "192.0.2.1:4711"
        last = last.split(b":", 1)[0]
    try:
        ipaddress.ip_address(last.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return peer
    return last


def request_context(client_ip: bytes, head: RequestHead | None, exclude: frozenset[int]) -> PickContext:
    """The request facts hashing schedulers read: client address, path, query, headers, cookies."""
    ctx = PickContext(exclude=exclude)
    ctx.client_ip = client_ip.decode()
    if head is not None:
        path, _, query = head.target.partition(b"?")
        ctx.path = path.decode("latin-1")
        ctx.query = query.decode("latin-1")
        headers = {}
        for name, value in head.field_lines():
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        if head.host is not None:
            headers["host"] = head.host.decode("latin-1")
        ctx.headers = headers
        cookie = headers.get("cookie")
        if cookie:
            for part in cookie.split(";"):
                k, eq, v = part.strip().partition("=")
                if eq:
                    ctx.cookies.setdefault(k, v)
    return ctx

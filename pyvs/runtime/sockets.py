"""Listening sockets: every worker binds its own with SO_REUSEPORT."""

from __future__ import annotations

import socket

from pyvs.config.schema import parse_address


def bind_socket(address: str, *, reuse_port: bool = True, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A bound, non-blocking socket for ``host:port``: TCP (not yet listening) by
    default, UDP with ``kind=socket.SOCK_DGRAM``."""
    host, port = parse_address(address)
    infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    family, stype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

"""Per-listener runtime, built once per worker: routes, forwarding headers, limits.

Everything here is computed at load time so the request path only reads attributes
(../shared/STYLE.md rule 6: compile the config up front).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvs.config.schema import Listener

if TYPE_CHECKING:
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.upstream.server import BackendRuntime


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    host: bytes | None
    path_prefix: bytes | None
    path: bytes | None
    backend: BackendRuntime

    def matches(self, host: bytes, path: bytes) -> bool:
        if self.host is not None and host != self.host:
            return False
        if self.path is not None and path != self.path:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


def normalise_host(host: bytes | None) -> bytes:
    """Lower-case, without port (``Example.COM:8080`` -> ``example.com``)."""
    if not host:
        return b""
    host = host.lower()
    if host.startswith(b"["):
        return host.split(b"]", 1)[0] + b"]"
    return host.split(b":", 1)[0]


class ListenerRuntime:
    """A listener inside one worker."""

    def __init__(self, cfg: Listener, backends: dict[str, BackendRuntime], worker: WorkerRuntime) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.worker = worker
        self.max_head = cfg.max_header_size
        self.accept_proxy = cfg.accept_proxy
        self.client_timeout = cfg.timeouts.client
        self.request_timeout = cfg.timeouts.request
        routes = [
            CompiledRoute(
                host=r.match.host.lower().encode() if r.match and r.match.host else None,
                path_prefix=r.match.path_prefix.encode() if r.match and r.match.path_prefix else None,
                path=r.match.path.encode() if r.match and r.match.path else None,
                backend=backends[r.backend],
            )
            for r in cfg.routes
        ]
        self.default_backend = backends[cfg.backend] if cfg.backend else None
        # Routes after an unconditional one can never match: cut them off.
        for i, r in enumerate(routes):
            if r.host is None and r.path is None and r.path_prefix is None:
                self.default_backend = r.backend
                routes = routes[:i]
                break
        self.routes = tuple(routes)
        self.routes_need_host = any(r.host is not None for r in self.routes)
        # The backend of every request when nothing about a request decides where it
        # goes (no routes, no persistence, no hashing): the frontend's short path.
        d = self.default_backend
        self.short_backend = d if d is not None and not self.routes and d.simple else None
        fw = cfg.forwarded
        self.fw_xff = fw.x_forwarded_for
        self.fw_xfp = fw.x_forwarded_proto
        self.fw_xfh = fw.x_forwarded_host
        self.fw_forwarded = fw.forwarded
        self.fw_via = fw.via
        self.scheme = b"http"
        self.xfp_line = b"X-Forwarded-Proto: " + self.scheme + b"\r\n"
        self.via_value = b"1.1 pyvs"
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in fw.trusted_proxies)
        # True for the default set (X-Forwarded-For/-Proto/-Host, no Forwarded, no Via):
        # the request path then builds the forwarded head with a single join.
        self.fw_default = self.fw_xff and self.fw_xfp and self.fw_xfh and not self.fw_forwarded and not self.fw_via

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def route(self, host: bytes | None, path: bytes) -> BackendRuntime | None:
        if self.routes:
            h = normalise_host(host) if self.routes_need_host else b""
            for r in self.routes:
                if r.matches(h, path):
                    return r.backend
        return self.default_backend

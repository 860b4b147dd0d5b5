"""Per-listener runtime, built once per worker: router, route chains, forwarding, limits.

Everything here is computed at load time so the request path only reads attributes
(../shared/STYLE.md rule 6: compile the config up front). The router
(:mod:`pyvs.l7.router`) is pure and shared with ``pyvs route``; this module pairs each
of its routes with what only a worker has: the backend's runtime and the compiled
filter chain (:class:`RouteRuntime`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvs.config.schema import Listener
from pyvs.l7.clientcap import ClientCap
from pyvs.l7.filters.base import Chain, Filter
from pyvs.l7.filters.forwarded import ForwardedHeaders
from pyvs.l7.request import normalise_host
from pyvs.l7.router import Router

if TYPE_CHECKING:
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.tls.conn import TlsEndpoint
    from pyvs.upstream.server import BackendRuntime, SessionPicker

__all__ = ["ListenerRuntime", "RouteRuntime", "build_chain", "normalise_host"]


@dataclass(slots=True)
class RouteRuntime:
    """One route inside one worker."""

    name: str
    vhost: str | None
    backend: BackendRuntime | None  # None: the chain always answers (respond, redirect, deny)
    chain: Chain
    # The route's own timeouts and retries, else its backend's (resolved at load).
    connect_timeout: float
    server_timeout: float
    total_timeout: float
    retries: int
    # Decided at load: an empty chain to a backend whose scheduler reads nothing of
    # the request (BackendRuntime.simple): the exchange's short path may take it.
    short: bool = False
    # No response filter: a whole response may go out byte for byte.
    fast_response: bool = True
    # buffer_request (pyvs/accel/buffer.py): bytes of body collected before a server is asked.
    buffer_request: int = 0


def build_chain(route: Any, vhost: Any, persist: SessionPicker | None = None) -> Chain:
    """The filters of one route, in the order they run: source ACLs (vhost, route),
    then either the answering action or the header and path rewrites; the backend's
    persistence edits the response before the route's header edits do. (The
    listener's own ACL runs before routing: ``ListenerRuntime.acl``.)"""
    from pyvs.l7.filters.acl import SourceAcl
    from pyvs.l7.filters.actions import Deny, Redirect, Respond
    from pyvs.l7.filters.headers import RequestHeaders, ResponseHeaders
    from pyvs.l7.filters.persist import StickyResponse
    from pyvs.l7.filters.rewrite import PathRewrite

    filters: list[Filter] = []
    if vhost is not None and (vhost.allow or vhost.deny):
        filters.append(SourceAcl(vhost.allow, vhost.deny))
    if route is None:
        return Chain(tuple(filters))
    deny_rule = route.deny is not None and not route.deny.is_action
    if route.allow:
        filters.append(SourceAcl(route.allow, ()))
    if deny_rule:  # a client outside allow gets 403, one in the deny rule its status
        filters.append(SourceAcl((), route.deny.source, route.deny.status))
    if route.redirect is not None:
        filters.append(Redirect(route.redirect.to, route.redirect.status))
    elif route.respond is not None:
        r = route.respond
        filters.append(Respond(r.status, r.body, r.headers, r.content_type))
    elif route.deny is not None and route.deny.is_action:
        filters.append(Deny(route.deny.status, route.deny.body))
    else:
        rq = route.request_headers
        if rq is not None:
            filters.append(RequestHeaders(rq.set, rq.add, rq.remove))
        rw = route.rewrite
        if rw is not None:
            filters.append(PathRewrite(rw.strip_prefix, rw.add_prefix, rw.regex, rw.replace))
        if persist is not None:
            filters.append(StickyResponse(persist))
        rs = route.response_headers
        if rs is not None:
            filters.append(ResponseHeaders(rs.set, rs.add, rs.remove))
    return Chain(tuple(filters))


class ListenerRuntime:
    """A listener inside one worker."""

    def __init__(self, cfg: Listener, backends: dict[str, BackendRuntime], worker: WorkerRuntime) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.worker = worker
        self.max_head = cfg.max_header_size
        self.accept_proxy = cfg.accept_proxy
        # max_client_connections: open connections per client address, counted by every
        # worker together (pyvs/l7/clientcap.py) -- or in this worker only without a zone.
        self.clients: dict[str, int] = {}
        self.client_cap: ClientCap | None = None
        state = getattr(worker, "shared_state", None)
        if cfg.max_client_connections and state is not None and cfg.name in state.clients:
            self.client_cap = ClientCap(state, state.clients[cfg.name], cfg.max_client_connections, worker.loop.time)
        self.client_timeout = cfg.timeouts.client
        self.request_timeout = cfg.timeouts.request
        # TLS termination (pyvs/tls): the endpoint holds the contexts the worker serves
        # with; the TLS filters (client subject, HSTS) go in front of every route's.
        self.tls: TlsEndpoint | None = None
        self.tls_filters: tuple[Filter, ...] = ()
        if cfg.tls is not None:
            from pyvs.tls.conn import TlsEndpoint
            from pyvs.tls.filters import listener_filters

            self.tls = TlsEndpoint(cfg.tls)
            self.tls_filters = listener_filters(cfg)
        self.scheme = b"https" if cfg.tls is not None else b"http"
        self.forwarded = ForwardedHeaders(cfg.forwarded, self.scheme)
        self.xfp_line = self.forwarded.xfp_line
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in cfg.forwarded.trusted_proxies)
        # True for the default set (X-Forwarded-For/-Proto/-Host, no Forwarded, no Via):
        # the request path then builds the forwarded head with a single join.
        self.fw_default = self.forwarded.default
        # The listener's own allow/deny runs before routing: a refused client learns
        # nothing of the vhosts (not even a 421).
        self.acl: Filter | None = None
        if cfg.allow or cfg.deny:
            from pyvs.l7.filters.acl import SourceAcl

            self.acl = SourceAcl(cfg.allow, cfg.deny)
        if cfg.redirect_https is not False:  # answers every request, before routing too
            from pyvs.tls.filters import Before, https_redirect

            redirect = https_redirect(cfg)
            assert redirect is not None
            self.acl = redirect if self.acl is None else Before(self.acl, redirect)
        state = getattr(worker, "shared_state", None)
        self.shared_state = state
        if cfg.rate_limit is not None and state is not None:  # before routing, as the ACL
            from pyvs.l7.filters.ratelimit import RateLimitFilter
            from pyvs.tls.filters import Before

            limit = RateLimitFilter(cfg.rate_limit, state.words, state.rates[cfg.name], worker.loop.time,
                                    worker.stats)
            self.acl = limit if self.acl is None else Before(self.acl, limit)
        self.router = Router.compile(cfg)
        vhosts = {v.name or f"vhosts[{i}]": v for i, v in enumerate(cfg.vhosts)} if cfg.mode == "http" else {}
        self.route_rt: tuple[RouteRuntime, ...] = tuple(
            self._runtime(spec, vhosts, backends) for spec in self.router.routes
        )
        # A listener whose every request takes the same route skips the router.
        self.fixed_route: RouteRuntime | None = None
        if self.router.trivial and self.route_rt:
            self.fixed_route = self.route_rt[0]
        # ... and when that route is short and no listener ACL runs: the exchange's
        # first test, so the common request decides nothing else before its pick.
        fixed = self.fixed_route
        self.short_route = fixed if fixed is not None and fixed.short and self.acl is None else None

    def _runtime(self, spec: Any, vhosts: dict[str, Any], backends: dict[str, BackendRuntime]) -> RouteRuntime:
        route = spec.config
        vhost = vhosts.get(spec.vhost) if spec.vhost is not None else None
        backend = backends[spec.backend] if spec.backend else None
        chain = build_chain(route, vhost, backend.persist if backend is not None else None)
        if backend is not None and self.cfg.mode == "http":  # compress, buffer_* (pyvs/accel): route, else listener
            from pyvs.accel import accel_filters

            accel = accel_filters(route, self.cfg)
            if accel:
                chain = Chain(chain.filters + accel)
            buffer_request = max((getattr(f, "request_limit", 0) for f in accel), default=0)
        if self.tls_filters:
            chain = Chain(self.tls_filters + chain.filters)
        state = self.shared_state
        if route is not None and route.rate_limit is not None and state is not None:
            from pyvs.l7.filters.ratelimit import RateLimitFilter

            limit = RateLimitFilter(route.rate_limit, state.words, state.rates[f"{self.name}.{spec.where}"],
                                    self.worker.loop.time, self.worker.stats)
            chain = Chain((limit, *chain.filters))
        own = getattr(route, "timeouts", None)
        retries = getattr(route, "retries", None)

        def resolved(kind: str, default: float) -> float:
            value = getattr(own, kind, None) if own is not None else None
            return float(value) if value else default

        rt = RouteRuntime(
            name=spec.name, vhost=spec.vhost, backend=backend, chain=chain,
            connect_timeout=resolved("connect", backend.connect_timeout if backend else 5.0),
            server_timeout=resolved("server", backend.server_timeout if backend else 60.0),
            total_timeout=resolved("total", backend.total_timeout if backend else 0.0),
            retries=retries if retries is not None else (backend.retries if backend else 0),
        )
        rt.short = chain.empty and backend is not None and backend.simple
        if backend is not None and self.cfg.mode == "http":
            rt.buffer_request = buffer_request
        rt.fast_response = not chain.response
        return rt

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

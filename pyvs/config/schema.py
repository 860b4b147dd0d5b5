"""The configuration schema: one pydantic model per section, unknown keys rejected.

Every field carries a description: ``pyvs config schema`` exports them as JSON Schema
(editor completion) and ``tests/unit/test_config_reference.py`` checks that
``docs/configuration.md`` documents each one. Cross-references (a listener naming a
backend that does not exist) are checked by :meth:`Config._check_references` so the
error names the key that is wrong.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pyvs.config.accel_schema import Cache, Compress
from pyvs.config.dns_schema import DnsOptions, DnsZone, check_dns
from pyvs.config.health_schema import HealthCheck, PassiveHealth, SorryConfig, merge_server_health
from pyvs.config.l4_schema import DataPlane, KernelConfig, ProxyVersion, QueueConfig, TcpConfig, UdpConfig, check_l4
from pyvs.config.limits_schema import HttpQueue, RateLimit
from pyvs.config.log_schema import AccessLogSetting, PageViewConfig
from pyvs.config.persist_schema import Persistence, StateConfig
from pyvs.config.route_schema import Route, RouteMatch, VHost, check_vhosts, parse_cidrs
from pyvs.config.schema_base import Model, _address, parse_address
from pyvs.config.tls_schema import ServerTls, TlsListener
from pyvs.config.units import Duration, Size
from pyvs.config.vrrp_schema import VrrpInstances
from pyvs.h2.settings import Http2Limits

__all__ = ["Model", "Route", "RouteMatch", "VHost", "parse_address"]


class GlobalConfig(Model):
    """Process-wide settings."""

    workers: int = Field(0, ge=0, le=256, description="Worker processes; 0 means one per CPU core.")
    grace: Duration = Field(
        30.0, description="On SIGTERM or reload, how long in-flight requests may take to finish."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    user: str | None = Field(
        None, description="Workers switch to this user (name or uid) once their listeners are open (started as root)."
    )
    group: str | None = Field(None, description="And to this group (default: the user's primary group).")

    @model_validator(mode="after")
    def _identity(self) -> GlobalConfig:
        from pyvs.runtime.privileges import resolve

        resolve(self.user, self.group)  # a user or group that does not exist: named here
        return self
    stats_interval: Duration = Field(
        1.0, gt=0, description="How often workers send their counters to the supervisor."
    )
    access_log: AccessLogSetting = Field(
        None, description="Default access log of every http listener that sets none (docs/logging.md)."
    )


class AdminConfig(Model):
    """The management endpoint (JSON status now; REST API and dashboard later)."""

    listen: str | None = Field(
        "127.0.0.1:9090", description="host:port of the admin HTTP server; null disables it."
    )
    token_file: str | None = Field(
        None,
        validate_default=True,
        description=(
            "File holding the admin bearer token (read at start, whitespace stripped); every "
            "request must then carry `Authorization: Bearer <token>`. Required when listen is "
            "not a loopback address."
        ),
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        return None if v is None else _address(v)

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        listen = info.data.get("listen")  # absent when listen itself is invalid
        if v is None:
            if isinstance(listen, str) and not cls.is_loopback(listen):
                raise ValueError("required when admin.listen is not a loopback address")
            return None
        cls.read_token_file(v)  # so `pyvs check` (and a start) refuses a file it cannot use
        return v

    @staticmethod
    def is_loopback(listen: str) -> bool:
        """Whether ``listen``'s host is a loopback address: 127.0.0.0/8, ::1 (also IPv4-mapped)
        or the name ``localhost``. Any other name counts as reachable from elsewhere: pyvs
        does not look names up when checking a config."""
        host, _ = parse_address(listen)
        if host.lower().rstrip(".") == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped.is_loopback
        return ip.is_loopback

    @staticmethod
    def read_token_file(path: str) -> bytes:
        """The token in ``path``, surrounding whitespace stripped. ValueError (the reason,
        without the key) when the file cannot be read, is empty, or holds a token that
        cannot travel in an HTTP header (printable ASCII without spaces only)."""
        try:
            with open(path, "rb") as f:
                data = f.read(65537)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > 65536:
            raise ValueError(f"{path} is larger than 64 KiB; it should hold only the token")
        token = data.strip()
        if not token:
            raise ValueError(f"{path} is empty; it must hold the admin token")
        if any(not 0x21 <= b <= 0x7E for b in token):
            raise ValueError(f"the token in {path} must be printable ASCII without spaces")
        return token

    def token(self) -> bytes | None:
        """Read the token now (at start); None when no token_file is set. The ValueError
        names the key: ``admin.token_file: cannot read ...``."""
        if self.token_file is None:
            return None
        try:
            return self.read_token_file(self.token_file)
        except ValueError as exc:
            raise ValueError(f"admin.token_file: {exc}") from None


class DemoServer(Model):
    """A tiny HTTP server pyvs starts itself, so a new user sees balancing at once."""

    name: str = Field(description="Name the demo server reports in its answers.")
    listen: str = Field(description="host:port it listens on.")

    _v = field_validator("listen")(lambda cls, v: _address(v))


class DemoConfig(Model):
    """Demo backends started inside pyvs's process tree (used by the embedded default)."""

    servers: list[DemoServer] = Field(default_factory=list, description="Demo servers to start.")


class ForwardedConfig(Model):
    """Client-identity headers added to proxied requests."""

    x_forwarded_for: bool = Field(True, description="Add the client address to X-Forwarded-For.")
    x_forwarded_proto: bool = Field(True, description="Set X-Forwarded-Proto (http or https).")
    x_forwarded_host: bool = Field(True, description="Set X-Forwarded-Host to the request's Host.")
    forwarded: bool = Field(False, description="Add an RFC 7239 Forwarded header (for=, proto=, host=).")
    via: bool = Field(False, description="Add a Via header (`1.1 pyvs`).")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "CIDRs of peers whose incoming X-Forwarded-*/Forwarded headers are kept and appended to; "
            "from any other peer those headers are removed first, so clients cannot spoof them."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"expected a CIDR like 10.0.0.0/8, got {item!r}") from None
        return v


class ListenerTimeouts(Model):
    """Client-side timeouts of an HTTP listener."""

    client: Duration = Field(60.0, gt=0, description="Idle keep-alive time between requests.")
    request: Duration = Field(
        30.0, gt=0, description="Time allowed to receive a whole request head (slow-client guard)."
    )


class Listener(Model):
    """A listening address and what to do with its traffic."""

    name: str = Field(description="Unique listener name (appears in logs and stats).")
    mode: Literal["http", "tcp", "udp", "dns"] = Field("http", description="Protocol handled by the listener.")
    bind: list[str] = Field(min_length=1, description="Addresses to listen on, host:port.")
    backend: str | None = Field(None, description="Default backend (same as a last route without match).")
    routes: list[Route] = Field(
        default_factory=list,
        description="Ordered routing rules (http only); with vhosts, used when no vhost takes the request.",
    )
    # Content routing (docs/routing.md); the models live in pyvs/config/route_schema.py.
    vhosts: list[VHost] = Field(default_factory=list, description="Virtual hosts, chosen by Host (http only).")
    allow: list[str] = Field(default_factory=list, description="Only clients in these CIDRs (others get 403).")
    deny: list[str] = Field(default_factory=list, description="Refuse clients in these CIDRs (403).")
    rate_limit: RateLimit | None = Field(
        None, description="http: requests per key, every worker together, before routing (docs/limits.md)."
    )
    # HTTP acceleration (docs/acceleration.md); the models live in pyvs/config/accel_schema.py.
    compress: Compress | None = Field(None, description="http: compress responses of every route without its own.")
    cache: Cache | None = Field(None, description="http: one response cache for every route without its own.")
    buffer_response: Size | None = Field(
        None, gt=0, description="http: read a response up to this size at once (routes may override)."
    )
    buffer_request: Size | None = Field(
        None, gt=0, description="http: collect a request body up to this size before a server is asked."
    )
    no_vhost_status: Literal[421, 404] = Field(
        421, description="Status when no vhost takes the request and there is no fallback route or backend."
    )
    forwarded: ForwardedConfig = Field(default_factory=ForwardedConfig, description="Forwarding headers.")
    timeouts: ListenerTimeouts = Field(default_factory=ListenerTimeouts, description="Client timeouts.")
    max_header_size: Size = Field(
        65536, ge=1024, description="Largest accepted request head (request line and headers)."
    )
    max_headers: int = Field(
        100, ge=1, le=10000, description="Most header fields in a request head; more are answered 431."
    )
    max_body: Size = Field(
        0, ge=0, description="Largest accepted request body (413 beyond it); 0 = no limit."
    )
    max_client_connections: int = Field(
        0, ge=0, description="Most connections open at once from one client address, per worker; 0 = no limit."
    )
    backlog: int = Field(1024, ge=1, description="listen() backlog.")
    # Layer 4 (tcp/udp); docs/layer4.md. The groups live in pyvs/config/l4_schema.py.
    dataplane: DataPlane = Field(
        "userspace", description="tcp/udp: forward in pyvs (userspace) or program the kernel (nftables, ipvs)."
    )
    send_proxy: ProxyVersion | None = Field(None, description="Send a PROXY protocol header (v1 or v2) to servers.")
    accept_proxy: bool = Field(
        False, description="Every client connection must start with a PROXY header (v1 or v2); others are closed."
    )
    maxconn: int = Field(0, ge=0, description="tcp: most client connections served at once per worker; 0 = no limit.")
    queue: QueueConfig = Field(default_factory=QueueConfig, description="tcp: connections waiting for a slot.")
    tcp: TcpConfig = Field(default_factory=TcpConfig, description="tcp: user-space proxy timeouts.")
    udp: UdpConfig = Field(default_factory=UdpConfig, description="udp: per-flow sessions.")
    kernel: KernelConfig = Field(default_factory=KernelConfig, description="nftables/ipvs data plane settings.")
    access_log: AccessLogSetting = Field(
        None, description="http: access log (docs/logging.md); false or off: none, even with global.access_log."
    )
    # Authoritative DNS (mode dns, UDP and TCP on each bind); docs/dns.md, pyvs/config/dns_schema.py.
    zones: list[DnsZone] = Field(default_factory=list, description="dns: zones answered authoritatively.")
    dns: DnsOptions | None = Field(None, description="dns: client regions, GSLB sites, limits.")
    # TLS termination (docs/tls.md); the models live in pyvs/config/tls_schema.py.
    tls: TlsListener | None = Field(None, description="http: terminate TLS (certificates by SNI); absent: plain.")
    redirect_https: bool | int = Field(
        False, description="http, plain: answer every request 308 to https (true: port 443, or this port)."
    )
    # HTTP/2 (docs/http2.md); the limits model lives in pyvs/h2/settings.py.
    http2: bool = Field(
        False, description="http, plain: also serve HTTP/2 with prior knowledge (h2c); on tls: offer h2 in tls.alpn."
    )
    http2_limits: Http2Limits = Field(
        default_factory=Http2Limits, description="http: limits of HTTP/2 client connections (streams, floods)."
    )

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("allow", "deny")
    @classmethod
    def _acl(cls, v: list[str]) -> list[str]:
        parse_cidrs(v)
        return v

    @model_validator(mode="after")
    def _needs_target(self) -> Listener:
        if self.mode != "http" and (self.tls is not None or self.redirect_https is not False):
            raise ValueError("tls and redirect_https are for http listeners")
        if self.tls is not None and self.redirect_https is not False:
            raise ValueError("redirect_https is for a plain listener; this one has tls")
        if self.http2 and self.mode != "http":
            raise ValueError("http2 is for http listeners")
        accel = [k for k in ("compress", "cache", "buffer_response", "buffer_request") if getattr(self, k) is not None]
        if accel and self.mode != "http":  # docs/acceleration.md
            raise ValueError(f"{', '.join(accel)}: for http listeners")
        if self.http2 and self.accept_proxy:
            raise ValueError("http2: h2c is not detected behind a PROXY header (accept_proxy) yet")
        if self.http2 and self.tls is not None and "h2" not in self.tls.alpn:
            raise ValueError("http2: on a tls listener HTTP/2 is chosen by ALPN: add h2 to tls.alpn")
        if self.tls is not None and self.accept_proxy:  # the PROXY header would come before the handshake
            raise ValueError("accept_proxy is not available on tls listeners yet")
        if type(self.redirect_https) is int and not 1 <= self.redirect_https <= 65535:
            raise ValueError(f"redirect_https: expected true, false or a port 1-65535, got {self.redirect_https}")
        if self.mode == "dns" or self.zones or self.dns is not None:
            return self._dns_listener()
        if self.mode != "http":
            if self.routes:
                raise ValueError(f"routes are for http listeners; a {self.mode} listener takes one backend")
            if self.vhosts or self.allow or self.deny:
                raise ValueError("vhosts, allow and deny are for http listeners")
            if self.backend is None:
                raise ValueError(f"a {self.mode} listener needs a backend")
            if self.mode == "udp" and (self.send_proxy or self.accept_proxy):
                raise ValueError("send_proxy and accept_proxy are for tcp and http listeners")
            if self.dataplane != "userspace" and (self.send_proxy or self.accept_proxy or self.maxconn):
                raise ValueError(f"send_proxy, accept_proxy and maxconn need dataplane userspace "
                                 f"(the {self.dataplane} data plane never sees the bytes)")
            return self
        if self.dataplane != "userspace":
            raise ValueError(f"dataplane {self.dataplane!r} is for tcp and udp listeners")
        if self.send_proxy:
            # A PROXY header belongs to one client connection; pooled server connections
            # are shared between clients, so this needs per-client connections first.
            raise ValueError("send_proxy is not available on http listeners yet (accept_proxy is)")
        if self.backend is None and not self.routes and not self.vhosts and self.redirect_https is False:
            raise ValueError("needs a backend or routes")
        return self

    def _dns_listener(self) -> Listener:
        if self.mode != "dns":
            raise ValueError("zones and dns are for dns listeners (mode: dns)")
        if not self.zones:
            raise ValueError("a dns listener needs zones")
        if self.backend or self.routes or self.vhosts or self.allow or self.deny or self.send_proxy \
                or self.accept_proxy or self.dataplane != "userspace":
            raise ValueError("a dns listener takes zones, not backend, routes, vhosts, allow/deny, "
                             "send_proxy, accept_proxy or a kernel dataplane")
        return self

    def all_routes(self) -> list[tuple[str, Route]]:
        """Every route of the listener with its path below the listener, vhosts first
        (``vhosts[1].routes[0]``, then ``routes[0]``)."""
        out = [(f"vhosts[{i}].routes[{j}]", r) for i, vh in enumerate(self.vhosts) for j, r in enumerate(vh.routes)]
        out.extend((f"routes[{j}]", r) for j, r in enumerate(self.routes))
        return out

    def check_routing(self) -> list[str]:
        """Rules across vhosts and routes (one default per address set, no server name
        twice, unique names), as ``path: reason`` below the listener."""
        errors = check_vhosts(self.vhosts)
        seen: dict[str, str] = {}
        for where, route in self.all_routes():
            if route.name is not None:
                if route.name in seen:
                    errors.append(f"{where}.name: {route.name!r} is also the name of {seen[route.name]}")
                else:
                    seen[route.name] = where
        return errors


class Server(Model):
    """One real server of a backend."""

    name: str = Field(description="Unique name within the backend.")
    address: str = Field(description="host:port of the server.")
    weight: int = Field(1, ge=0, le=256, description="Relative share of traffic; 0 takes none.")
    backup: bool = Field(False, description="Used only when no non-backup server is up.")
    maxconn: int = Field(0, ge=0, description="Most concurrent requests sent to it; 0 = no limit.")
    health: HealthCheck | None = Field(
        None, description="Per-server changes to the backend's health check (merged over it), e.g. {port: 8081}."
    )
    tls: ServerTls | None = Field(None, description="Speak TLS to this server (and its http checks); docs/tls.md.")
    proto: Literal["http1", "h2", "h2c"] = Field(
        "http1", description="Protocol of requests to this server: HTTP/1.1, or HTTP/2 (h2: over TLS by ALPN "
        "with tls, else clear text; h2c: clear text); docs/http2.md.",
    )

    _v = field_validator("address")(lambda cls, v: _address(v))

    @model_validator(mode="after")
    def _proto(self) -> Server:
        if self.proto == "h2c" and self.tls is not None:
            raise ValueError("proto: h2c is HTTP/2 in clear text; with tls, write proto: h2")
        return self


class BackendTimeouts(Model):
    """Server-side timeouts."""

    connect: Duration = Field(5.0, gt=0, description="TCP connect to a server.")
    server: Duration = Field(
        60.0, gt=0, description="Waiting for the server: its response head, and each read after it."
    )
    total: Duration = Field(0.0, ge=0, description="Whole exchange, request to end of response; 0 = none.")


class PoolConfig(Model):
    """Idle keep-alive connections kept per server and reused across clients."""

    max_idle: int = Field(64, ge=0, description="Idle connections kept per server (per worker); 0 disables reuse.")
    idle_timeout: Duration = Field(
        30.0, gt=0, description="Close a pooled connection idle this long (keep below the server's own)."
    )


class Backend(Model):
    """A pool of servers and how to choose among them."""

    name: str = Field(description="Unique backend name.")
    balance: str = Field("roundrobin", description="Scheduling algorithm, e.g. roundrobin, static-rr.")
    hash_type: Literal["map", "consistent", "maglev"] = Field("map", description="For hash-based algorithms.")
    balance_options: dict[str, float | Duration] = Field(
        default_factory=dict,
        description="Algorithm tunables, e.g. {balance_factor: 1.25} or {decay: 10s} (see the algorithms page).",
    )
    health: HealthCheck | None = Field(None, description="Active health check of every server (none: always up).")
    servers: list[Server] = Field(min_length=1, description="The servers.")
    timeouts: BackendTimeouts = Field(default_factory=BackendTimeouts, description="Server timeouts.")
    pool: PoolConfig = Field(default_factory=PoolConfig, description="Connection reuse.")
    retries: int = Field(
        2, ge=0, le=10, description="Extra attempts on another server after a failed connect."
    )
    passive: PassiveHealth | None = Field(None, description="Outlier detection on live traffic (none: off).")
    slowstart: Duration = Field(
        0.0, ge=0, description="A server coming back UP ramps its weight from near 0 to full over this time."
    )
    sorry: SorryConfig = Field(default_factory=SorryConfig, description="Answer when no server is up.")
    persistence: Persistence | None = Field(
        None, description="Session persistence: cookie, source address, header or query parameter (docs/sessions.md)."
    )
    queue: HttpQueue = Field(
        default_factory=HttpQueue,
        description="http: requests waiting while every server they may use is at its maxconn (docs/limits.md).",
    )

    _merge_health = model_validator(mode="before")(lambda cls, data: merge_server_health(data))

    @model_validator(mode="after")
    def _scheduler_builds(self) -> Backend:
        """Build the scheduler once so that a bad argument (``header`` without a name)
        is reported by ``pyvs check`` rather than crashing the workers."""
        from pyvs.balance.base import Target, create

        targets = [Target(index=i, name=s.name, weight=s.weight, backup=s.backup) for i, s in enumerate(self.servers)]
        try:
            options: dict[str, Any] = dict(self.balance_options)
            create(self.balance, targets, hash_type=self.hash_type, **options)
        except ValueError as exc:
            raise ValueError(f"balance: {exc}") from None
        return self

    @field_validator("balance")
    @classmethod
    def _balance(cls, v: str) -> str:
        from pyvs.balance import load_all
        from pyvs.balance.base import REGISTRY, parse_spec

        load_all()
        name, _ = parse_spec(v)
        if name not in REGISTRY:
            raise ValueError(f"unknown algorithm {v!r}; known: {', '.join(sorted(REGISTRY))}")
        return v

    @field_validator("servers")
    @classmethod
    def _unique(cls, v: list[Server]) -> list[Server]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"server name {s.name!r} is used twice")
            seen.add(s.name)
        return v


class Config(Model):
    """The whole configuration file."""

    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global", description="Process settings.")
    admin: AdminConfig = Field(default_factory=AdminConfig, description="Admin endpoint.")
    demo: DemoConfig = Field(default_factory=DemoConfig, description="Built-in demo backends.")
    listeners: list[Listener] = Field(default_factory=list, description="Listeners.")
    backends: list[Backend] = Field(default_factory=list, description="Backends.")
    state: StateConfig = Field(
        default_factory=StateConfig, description="Where shared state (stick tables) lives: memory or Redis."
    )
    vrrp: VrrpInstances = Field(
        default_factory=list, description="VRRP instances: virtual IPs shared with other nodes (docs/ha.md)."
    )
    pageviews: PageViewConfig | None = Field(
        None, description="Page-view and unique-visitor statistics of http listeners (docs/logging.md); absent: off."
    )

    @model_validator(mode="after")
    def _server_tls(self) -> Config:
        """Make each TLS server's context known to the health checks (pyvs/tls/client.py)."""
        if any(s.tls is not None for b in self.backends for s in b.servers):
            from pyvs.tls.client import of_config, remember

            remember(of_config(self))
        return self

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        errors: list[str] = []
        names = [b.name for b in self.backends]
        for n in sorted({n for n in names if names.count(n) > 1}):
            errors.append(f"backends: name {n!r} is used twice")
        lnames = [x.name for x in self.listeners]
        for n in sorted({n for n in lnames if lnames.count(n) > 1}):
            errors.append(f"listeners: name {n!r} is used twice")
        known = set(names)
        binds: dict[str, str] = {}
        for i, lst in enumerate(self.listeners):
            if lst.backend is not None and lst.backend not in known:
                errors.append(f"listeners[{i}].backend: no backend named {lst.backend!r}")
            for where, r in lst.all_routes():
                if r.backend is not None and r.backend not in known:
                    errors.append(f"listeners[{i}].{where}.backend: no backend named {r.backend!r}")
            errors.extend(f"listeners[{i}].{e}" for e in lst.check_routing())
            if lst.mode == "dns":
                servers = {b.name: [sv.name for sv in b.servers] for b in self.backends}
                errors.extend(f"listeners[{i}].{e}" for e in check_dns(lst.zones, lst.dns or DnsOptions(), servers))
            for addr in lst.bind:
                if addr in binds:
                    errors.append(f"listeners[{i}].bind: {addr} is also bound by listener {binds[addr]!r}")
                binds[addr] = lst.name

        # The admin API and demo servers are TCP servers of the supervisor: on a TCP
        # listener's address (or each other's) the start would fail "address in use".
        taken = {a: f"listener {x.name!r}" for x in self.listeners if x.mode != "udp" for a in x.bind}
        own = [("admin.listen", self.admin.listen)]
        own += [(f"demo.servers[{j}].listen", d.listen) for j, d in enumerate(self.demo.servers)]
        for key, mine in own:
            if mine is not None and mine in taken:
                errors.append(f"{key}: {mine} is also bound by {taken[mine]}")
            elif mine is not None:
                taken[mine] = key
        if not errors:
            errors.extend(check_l4(self))
        if errors:
            # One ValueError per problem is not possible from a validator; the loader
            # splits this message back into one problem per line.
            raise ValueError("\n".join(errors))
        return self

"""Health-check configuration: active checks per backend (overridable per server),
passive outlier detection, and what to answer when no server is up.

A server's ``health`` block is merged over its backend's before validation, so an
error in an override names the server (``backends[0].servers[1].health.port``) and a
server overrides only what differs (``{port: 8081}``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration


def _status_spec(item: Any) -> tuple[int, int]:
    if isinstance(item, int) and not isinstance(item, bool):
        lo = hi = item
    elif isinstance(item, str) and re.fullmatch(r"\d{3}(-\d{3})?", item.strip()):
        parts = item.strip().split("-")
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        raise ValueError(f"expected a status like 200 or a range like \"200-399\", got {item!r}")
    if not (100 <= lo <= hi <= 599):
        raise ValueError(f"status range {item!r} must lie within 100-599")
    return lo, hi


class HealthCheck(Model):
    """An active health check."""

    type: Literal["tcp", "http", "agent", "command", "grpc"] = Field(description="What kind of check.")
    interval: Duration = Field(2.0, gt=0, description="Time between checks of one server.")
    down_interval: Duration | None = Field(
        None, gt=0, description="Time between checks while the server is DOWN (default: interval)."
    )
    timeout: Duration = Field(1.0, gt=0, description="A check not finished in this time has failed.")
    rise: int = Field(2, ge=1, le=100, description="Consecutive successes that bring a DOWN server UP.")
    fall: int = Field(3, ge=1, le=100, description="Consecutive failures that take an UP server DOWN.")
    jitter: float = Field(
        0.1, ge=0, le=0.5, description="Random spread of each interval, as a fraction of it (0.1 = +/-10%)."
    )
    port: int | None = Field(None, ge=1, le=65535, description="Port to check (default: the server's port).")
    send: str | None = Field(None, description="tcp: text to send after connecting (\\r\\n escapes allowed).")
    expect: str | None = Field(None, description="tcp: text that must appear in what the server sends back.")
    method: str = Field("GET", description="http: request method.")
    path: str = Field("/", description="http: request target.")
    host: str | None = Field(None, description="http: Host header (default: the server's address).")
    headers: dict[str, str] = Field(default_factory=dict, description="http: extra request headers.")
    expect_status: list[int | str] = Field(
        default_factory=lambda: list[int | str](["200-399"]),
        description="http: accepted statuses or ranges, e.g. [200, \"300-399\"].",
    )
    expect_body: str | None = Field(None, description="http: a regular expression the body must match.")
    tls: bool = Field(False, description="http: check over TLS (the certificate is not verified).")
    grpc_service: str = Field(
        "", description="grpc: the service asked about (grpc.health.v1); empty: the server as a whole."
    )
    command: list[str] = Field(
        default_factory=list,
        description="command: program and arguments; exit status 0 means up. Gets PYVS_SERVER_* in its environment.",
    )

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, v: list[int | str]) -> list[int | str]:
        if not v:
            raise ValueError("at least one status or range is needed")
        for item in v:
            _status_spec(item)
        return v

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]+", v):
            raise ValueError(f"expected an HTTP method like GET or HEAD, got {v!r}")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> HealthCheck:
        if self.type == "command" and not self.command:
            raise ValueError("type command needs `command` (program and arguments)")
        if self.type == "agent" and self.port is None:
            raise ValueError("type agent needs `port` (where the server's agent listens)")
        return self

    def status_ranges(self) -> list[tuple[int, int]]:
        return [_status_spec(i) for i in self.expect_status]


ErrorKind = Literal["connect", "timeout", "5xx"]


class PassiveHealth(Model):
    """Outlier detection on live traffic (Envoy style)."""

    consecutive_errors: int = Field(
        5, ge=1, description="Consecutive failures (connect errors, timeouts, 5xx) that eject a server."
    )
    errors: list[ErrorKind] = Field(
        default_factory=lambda: list[ErrorKind](["connect", "timeout", "5xx"]), description="Which failures count."
    )
    base_ejection: Duration = Field(30.0, gt=0, description="First ejection time; the n-th lasts n times this.")
    max_ejection: Duration = Field(300.0, gt=0, description="Longest ejection.")
    max_ejected_percent: int = Field(
        50, ge=0, le=100, description="Most of a backend's servers that may be ejected at once (at least one)."
    )


class SorryConfig(Model):
    """What clients get when no server (primary or backup) is up."""

    status: int = Field(503, ge=200, le=599, description="Status of the sorry response.")
    body: str | None = Field(None, description="Body of the sorry response (default: a short text).")
    content_type: str = Field("text/plain; charset=utf-8", description="Content-Type of the sorry body.")
    server: str | None = Field(None, description="host:port of a sorry server to send requests to instead.")

    @field_validator("server")
    @classmethod
    def _server(cls, v: str | None) -> str | None:
        if v is not None:
            from pyvs.config.schema import parse_address

            parse_address(v)
        return v


def merge_server_health(data: Any) -> Any:
    """``mode="before"`` hook for Backend: merge each server's ``health`` over the backend's."""
    if not isinstance(data, dict):
        return data
    base = data.get("health")
    servers = data.get("servers")
    if not isinstance(servers, list):
        return data
    out = []
    for s in servers:
        if isinstance(s, dict) and isinstance(s.get("health"), dict):
            merged = {**base, **s["health"]} if isinstance(base, dict) else dict(s["health"])
            s = {**s, "health": merged}
        out.append(s)
    return {**data, "servers": out}

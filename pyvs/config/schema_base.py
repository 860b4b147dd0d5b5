"""Pieces every config module shares: the strict model base and address parsing.

Kept apart from :mod:`pyvs.config.schema` so that section modules (health, VRRP, L4)
can import them without a circular import.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_address(value: str, *, what: str = "host:port") -> tuple[str, int]:
    """``"127.0.0.1:80"`` / ``"[::1]:80"`` / ``"localhost:80"`` -> (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected {what}, got {value!r}")
    host, _, port_s = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"expected {what}, {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"expected {what} (IPv6 addresses go in brackets: [::1]:80), got {value!r}")
    if not host:
        raise ValueError(f"expected {what}, the host is empty in {value!r}")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected {what} with a port 0-65535, got {value!r}")
    return host, int(port_s)


def _address(value: str) -> str:
    parse_address(value)
    return value



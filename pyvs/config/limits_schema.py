"""Config of the limits every worker enforces together (pyvs/shared): the HTTP queue
in front of servers at their ``maxconn``, and request rate limits.

Kept apart from :mod:`pyvs.config.schema` (a section module, as health or L4).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*\Z")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_KEY = re.compile(r"(client_ip|header\(([A-Za-z0-9!#$%&'*+.^_`|~-]+)\)|cookie\(([A-Za-z0-9!#$%&'*+.^_`|~-]+)\))\Z")


class HttpQueue(Model):
    """Requests waiting for a server below its ``maxconn`` (HTTP; HAProxy's queue)."""

    size: int = Field(
        1024, ge=0, le=1 << 20,
        description="Most requests waiting, all workers together; beyond it 503 at once. 0 = no queue.",
    )
    timeout: Duration = Field(5.0, gt=0, description="Longest wait for a server slot; then 503 (timeout queue).")


def parse_rate(value: str) -> float:
    """``"100/s"``, ``"30/m"``, ``"1000/h"`` -> requests per second."""
    m = _RATE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate such as 100/s, 30/m or 1000/h, got {value!r}")
    return float(m.group(1)) / _PER[m.group(2)]


def parse_key(value: str) -> tuple[str, str]:
    """``client_ip`` / ``header(X-Api-Key)`` / ``cookie(session)`` -> (kind, name)."""
    m = _KEY.match(value.strip())
    if not m:
        raise ValueError(f"expected client_ip, header(NAME) or cookie(NAME), got {value!r}")
    if m.group(2):
        return "header", m.group(2)
    if m.group(3):
        return "cookie", m.group(3)
    return "client_ip", ""


class RateLimit(Model):
    """Requests per key over time (nginx ``limit_req``), exact across workers: a
    generic cell rate algorithm over a table in the shared zone."""

    key: str = Field("client_ip", description="What is limited: client_ip, header(NAME) or cookie(NAME).")
    rate: str = Field(description="Sustained rate per key: N/s, N/m or N/h.")
    burst: int = Field(0, ge=0, description="Requests allowed at once beyond the rate (nginx burst, nodelay).")
    status: int = Field(429, ge=400, le=599, description="Answer to a request over the limit.")
    max_entries: int = Field(
        100_000, ge=1, le=10_000_000, description="Keys tracked at once; the least active are forgotten first."
    )

    _k = field_validator("key")(lambda cls, v: (parse_key(v), v)[1])
    _r = field_validator("rate")(lambda cls, v: (parse_rate(v), v)[1])

    @property
    def per_second(self) -> float:
        return parse_rate(self.rate)

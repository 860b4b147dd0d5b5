"""Configuration of HTTP acceleration: response compression and buffering.

These models only declare and validate (unknown keys rejected, ranges per algorithm);
:mod:`pyvs.accel` builds the filters from them once per worker. The keys may be set on
a listener (every route of it) and on a route (which then replaces the listener's
setting as a whole, as nginx's ``gzip`` directives do per ``location``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Size

Algorithm = Literal["br", "zstd", "gzip"]
_ALGORITHMS: tuple[Algorithm, ...] = ("br", "zstd", "gzip")

# Levels each library accepts, and the default when none is given: zlib's own default,
# brotli's quality 4 (what most servers pick for on-the-fly compression), zstd's 3.
LEVELS: dict[str, tuple[int, int, int]] = {"gzip": (1, 9, 6), "br": (0, 11, 4), "zstd": (1, 22, 3)}

DEFAULT_TYPES = (
    "text/html", "text/css", "text/plain", "text/xml", "text/javascript", "application/javascript",
    "application/json", "application/xml", "application/xhtml+xml", "image/svg+xml",
)
_MEDIA = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/(?:\*|[!#$%&'*+.^_`|~0-9a-z-]+)")


class Compress(Model):
    """``compress``: compress responses on the fly (gzip, brotli, zstd)."""

    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list(_ALGORITHMS),
        min_length=1,
        description="Codings offered, in the server's order of preference (ties of the client's q-values).",
    )
    types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TYPES),
        min_length=1,
        description="Content types compressed: type/subtype or type/*; * for any.",
    )
    min_size: Size = Field(256, description="Smallest Content-Length compressed (a body of unknown length is).")
    level: dict[Algorithm, int] = Field(
        default_factory=dict, description="Level per algorithm: gzip 1-9 (6), br 0-11 (4), zstd 1-22 (3)."
    )

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen = set()
        for a in v:
            if a in seen:
                raise ValueError(f"{a} is listed twice")
            seen.add(a)
        return v

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        out = []
        for t in v:
            t = t.strip().lower()
            if t != "*" and not _MEDIA.fullmatch(t):
                raise ValueError(f"expected a media type like text/html or text/*, got {t!r}")
            out.append(t)
        return out

    @model_validator(mode="after")
    def _levels(self) -> Compress:
        for alg, value in self.level.items():
            low, high, _ = LEVELS[alg]
            if not low <= value <= high:
                raise ValueError(f"level.{alg}: expected {low}-{high}, got {value}")
        return self

    def level_of(self, alg: str) -> int:
        """The configured level of ``alg``, else its default."""
        for name, value in self.level.items():
            if name == alg:
                return value
        return LEVELS[alg][2]


class Cache(Model):
    """``cache``: a shared HTTP cache in memory (RFC 9111), one store for all workers
    (pyvs/accel/shared_store.py)."""

    size: Size = Field(64 * 1024 * 1024, ge=1024, description="Most bytes of stored responses (heads and bodies).")
    max_object: Size = Field(
        1024 * 1024, ge=1, description="Largest response stored; a larger one streams through uncached."
    )
    heuristic: bool = Field(
        False, description="Without explicit freshness, 10% of the time since Last-Modified (RFC 9111 4.2.2)."
    )
    x_cache: bool = Field(True, description="Add X-Cache: HIT or MISS to responses.")
    path: str = Field(
        "/dev/shm", description="Directory (tmpfs: memory) under which the workers' shared store keeps its objects."
    )
    local: Size = Field(
        16 * 1024 * 1024, ge=0,
        description="Bytes of hot objects each worker also keeps in its own memory (0: every hit reads the store).",
    )

    @model_validator(mode="after")
    def _sizes(self) -> Cache:
        if self.max_object > self.size:
            raise ValueError(f"max_object ({self.max_object}) is larger than size ({self.size})")
        if not self.path.startswith("/"):
            raise ValueError(f"path: expected an absolute directory, got {self.path!r}")
        return self

"""Session persistence (``backends[].persistence``) and shared state (``state``).

One ``persistence`` section per backend, with a ``type`` that decides which other
keys apply: a key meant for another type is an error rather than silently ignored
(``mode`` on a ``source`` table would do nothing, and the user should know).

``state`` says where stick tables live: in the supervisor's memory (the default,
one table per pyvs instance, shared by its workers) or in Redis, shared by every
pyvs node that names the same Redis and ``key_prefix``.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM = re.compile(r"[^\s&=#]+")

# Keys that only mean something for some types (anything else applies to all).
_ONLY_FOR: dict[str, tuple[str, ...]] = {
    "timeout": ("source", "header", "param"),
    "max_entries": ("source", "header", "param"),
    "ipv4_prefix": ("source",),
    "ipv6_prefix": ("source",),
    "name": ("cookie", "header", "param"),
    "mode": ("cookie",),
    "indirect": ("cookie",),
    "nocache": ("cookie",),
    "httponly": ("cookie",),
    "secure": ("cookie",),
    "samesite": ("cookie",),
    "domain": ("cookie",),
    "maxidle": ("cookie",),
    "maxlife": ("cookie",),
    "response_header": ("header", "param"),
}


class Persistence(Model):
    """Send a client's requests to the server that served it before."""

    type: Literal["source", "cookie", "header", "param"] = Field(
        description="What identifies a session: client address, a cookie, a request header or a query parameter."
    )
    on_failure: Literal["redispatch", "fail"] = Field(
        "redispatch",
        description="When the sticky server is down or draining: pick another server and re-stick (redispatch), "
        "or answer 503 (fail).",
    )
    timeout: Duration = Field(
        1800.0, gt=0, description="source/header/param: an entry is forgotten after this long without a request."
    )
    max_entries: int = Field(
        1_000_000, ge=1, description="source/header/param: most entries kept; the least recently used go first."
    )
    ipv4_prefix: int = Field(32, ge=1, le=32, description="source: IPv4 clients in one /N network share a server.")
    ipv6_prefix: int = Field(64, ge=1, le=128, description="source: IPv6 clients in one /N network share a server.")
    name: str | None = Field(
        None, description="cookie: the cookie name; header: the request header; param: the query parameter."
    )
    mode: Literal["insert", "rewrite", "prefix"] = Field(
        "insert",
        description="cookie: pyvs sets the cookie (insert), replaces the value of the server's cookie (rewrite), "
        "or prefixes it with the server id (prefix).",
    )
    indirect: bool = Field(True, description="cookie insert: remove the cookie from requests sent to servers.")
    nocache: bool = Field(
        False, description="cookie: mark responses that set the cookie `Cache-Control: private` for shared caches."
    )
    httponly: bool = Field(False, description="cookie insert: add the HttpOnly attribute.")
    secure: bool = Field(False, description="cookie insert: add the Secure attribute.")
    samesite: Literal["strict", "lax", "none"] | None = Field(
        None, description="cookie insert: the SameSite attribute (none requires secure)."
    )
    domain: str | None = Field(None, description="cookie insert: the Domain attribute.")
    maxidle: Duration = Field(
        0.0, ge=0, description="cookie insert: a cookie unused this long no longer sticks; 0 = no limit."
    )
    maxlife: Duration = Field(
        0.0, ge=0, description="cookie insert: a cookie older than this no longer sticks; 0 = no limit."
    )
    response_header: str | None = Field(
        None,
        description="header/param: learn keys from this response header too (default for header: `name`).",
    )

    @field_validator("name", "response_header")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and not _TOKEN.fullmatch(v):
            raise ValueError(f"expected a cookie or header name (letters, digits, -_.), got {v!r}")
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", v):
            raise ValueError(f"expected a domain like example.com, got {v!r}")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> Persistence:
        wrong = sorted(k for k in self.model_fields_set if self.type not in _ONLY_FOR.get(k, (self.type,)))
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: not used by type {self.type}")
        if self.type != "source" and not self.name:
            what = {"cookie": "the cookie", "header": "the request header", "param": "the query parameter"}
            raise ValueError(f"type {self.type} needs `name` ({what[self.type]} that identifies a session)")
        if self.type == "param" and self.name and not _PARAM.fullmatch(self.name):
            raise ValueError(f"expected a query parameter name, got {self.name!r}")
        if self.type == "cookie" and self.mode != "insert":
            extra = sorted(
                k for k in ("indirect", "httponly", "secure", "samesite", "domain", "maxidle", "maxlife")
                if k in self.model_fields_set
            )
            if extra:
                raise ValueError(f"{', '.join(extra)}: only used by mode insert")
        if self.samesite == "none" and not self.secure:
            raise ValueError("samesite none needs secure: true (browsers drop such cookies otherwise)")
        return self

    @property
    def uses_table(self) -> bool:
        """Whether sessions live in a stick table (shared through the supervisor / Redis)."""
        return self.type != "cookie"


class StateConfig(Model):
    """Where shared state (stick tables) lives."""

    redis: str | None = Field(
        None,
        description="Redis URL (redis://host:port/db, rediss://, unix://path) shared by pyvs nodes; "
        "null keeps state in each instance's memory.",
    )
    key_prefix: str = Field(
        "pyvs", min_length=1, description="Namespace of pyvs keys in Redis (nodes that share sessions use the same)."
    )
    timeout: Duration = Field(
        1.0, gt=0, description="A Redis command batch not answered in this time counts as Redis being down."
    )
    retry_interval: Duration = Field(1.0, gt=0, description="How often to try to reconnect while Redis is down.")

    @field_validator("redis")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a URL like redis://127.0.0.1:6379/0, got {v!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"the Redis URL names no host: {v!r}")
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", v):
            raise ValueError(f"expected letters, digits and _.:- only, got {v!r}")
        return v

"""Configuration of access logs and page-view statistics (docs/logging.md).

``access_log`` may be set per listener and once in ``global`` (the default of every
HTTP listener that sets none). The short forms a user of nginx expects work too:
``access_log: /var/log/pyvs/access.json`` (a path, ``stdout``, or a ``syslog://``
address) and ``access_log: off`` (YAML reads ``off`` as false) to silence one listener
while a global default is set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pyvs.config.schema_base import Model, parse_address
from pyvs.config.units import Duration, Size

SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
Facility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
]


class AccessLogConfig(Model):
    """One access-log output: where the lines go and how they are written."""

    path: str = Field(
        description=(
            "Where lines go: a file path (appended to, reopened on SIGUSR1), `stdout`, "
            "`syslog://HOST:PORT` (RFC 5424 over UDP) or `syslog:///dev/log` (a local unix datagram socket)."
        )
    )
    format: Literal["ecs", "combined"] = Field(
        "ecs", description="`ecs`: one JSON object per line, Elastic Common Schema names; `combined`: nginx/Apache."
    )
    flush: Duration = Field(
        1.0, gt=0, le=60, description="Longest time a line waits in the worker before it is handed to the writer."
    )
    buffer: Size = Field(
        1 << 20, ge=4096,
        description="Bytes that may wait for a slow or full sink; lines beyond it are dropped and counted.",
    )
    facility: Facility = Field("local0", description="syslog: the facility of every line (severity is info).")
    tag: str = Field("pyvs", min_length=1, max_length=48, description="syslog: the APP-NAME of every line.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if v.startswith("syslog:"):
            syslog_target(v)  # raises with the reason
        elif not v:
            raise ValueError("expected a file path, stdout or a syslog:// address")
        return v

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if any(not 0x21 <= ord(c) <= 0x7E for c in v):
            raise ValueError("printable ASCII without spaces only (RFC 5424 APP-NAME)")
        return v


def syslog_target(path: str) -> tuple[str, str | tuple[str, int]]:
    """``("unix", "/dev/log")`` or ``("udp", (host, port))`` for a ``syslog:`` address."""
    rest = path.removeprefix("syslog:")
    if not rest.startswith("//"):
        raise ValueError(f"expected syslog://HOST:PORT or syslog:///path/to/socket, got {path!r}")
    rest = rest[2:]
    if rest.startswith("/"):
        return "unix", rest
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":514"
    return "udp", parse_address(rest, what="syslog://HOST:PORT")


# listeners[].access_log / global.access_log: a config, or false/"off" (none, even with a global default).
AccessLogSetting = AccessLogConfig | Literal[False, "off"] | None

_ASSETS = [
    ".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".ico",
    ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp4", ".webm", ".mp3", ".json", ".xml", ".txt", ".pdf", ".zip",
]


class PageViewConfig(Model):
    """Page-view statistics: which requests count as a page view and what is kept."""

    enabled: bool = Field(True, description="Count page views (the section's presence turns them on).")
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1, description="Methods that count.")
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html"],
        description="Response Content-Type prefixes that count (empty: any type).",
    )
    exclude_extensions: list[str] = Field(
        default_factory=lambda: list(_ASSETS), description="Paths ending in these are assets, never page views."
    )
    prefix_depth: int = Field(1, ge=0, le=8, description="PV per path prefix: this many leading path segments.")
    top: int = Field(20, ge=1, le=1000, description="How many top URLs are reported per vhost.")

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        return [m.upper() for m in v]

    @field_validator("exclude_extensions")
    @classmethod
    def _ext(cls, v: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in v]

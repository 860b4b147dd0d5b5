"""Durations (``2s``, ``150ms``, ``1m30s``) and sizes (``64k``, ``10m``) as config types.

Both accept plain numbers too: a bare number is seconds for durations and bytes for
sizes, so that generated configs (JSON, tools) need not format units.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h|d)")
_DUR_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: Any) -> float:
    """Return seconds. ``"1m30s"`` -> 90.0; ``2`` -> 2.0; ``"0"`` -> 0.0."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 2s or 150ms, got a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("duration must be a finite number")
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 2s or 150ms, got {type(value).__name__}")
    text = value.strip().lower()
    if text in {"0", "0s"}:
        return 0.0
    if text.replace(".", "", 1).isdigit():
        return parse_duration(float(text))
    pos, total = 0, 0.0
    for m in _DUR_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration like 2s, 150ms or 1m30s, got {value!r}")
    return total


def parse_size(value: Any) -> int:
    """Return bytes. ``"64k"`` -> 65536; ``"10m"`` -> 10485760; ``512`` -> 512."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 64k or 10m, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 64k or 10m, got {type(value).__name__}")
    m = _SIZE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"expected a size like 64k or 10m, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for the common cases (used in schema output)."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


_DURATION_SCHEMA = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^(\d+(\.\d+)?(us|ms|s|m|h|d))+$"}],
    "description": "seconds, or a duration like 2s, 150ms, 1m30s",
}
_SIZE_SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d+\s*[kKmMgG]?([iI]?[bB])?$"}],
    "description": "bytes, or a size like 64k, 10m",
}
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]

"""The ``http2_limits`` section of an http listener: types only (STYLE rule 7).

Imported by the config schema; importing it pulls in neither the ``h2`` library
nor the engine.
"""

from __future__ import annotations

from pydantic import Field

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration, Size


class Http2Limits(Model):
    """Per-connection limits of HTTP/2 clients (docs/http2.md#limits)."""

    max_concurrent_streams: int = Field(
        128, ge=1, le=65535, description="SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once."
    )
    initial_window_size: Size = Field(
        65535, ge=65535, le=2**31 - 1,
        description="Flow-control window of each request body stream (bytes the client may send unacknowledged).",
    )
    connection_window_size: Size = Field(
        1048576, ge=65535, le=2**31 - 1,
        description="Flow-control window of the whole connection for request bodies.",
    )
    max_frame_size: Size = Field(16384, ge=16384, le=16777215, description="SETTINGS_MAX_FRAME_SIZE offered.")
    buffer: Size = Field(
        262144, ge=16384,
        description="Response bytes held per stream while the client's window is closed; beyond it the server "
        "connection stops being read.",
    )
    window: Duration = Field(10.0, gt=0, description="The period over which the counters below are taken.")
    max_resets: int = Field(
        200, ge=1,
        description="RST_STREAM frames from a client per window; more: GOAWAY ENHANCE_YOUR_CALM (CVE-2023-44487).",
    )
    max_control_frames: int = Field(
        500, ge=1, description="PING, SETTINGS and PRIORITY frames per window; more: GOAWAY ENHANCE_YOUR_CALM."
    )
    max_empty_frames: int = Field(
        500, ge=1, description="DATA frames without data (and not ending the stream) per window; more: GOAWAY."
    )


def serves_h2(cfg: object) -> bool:
    """True when a listener serves HTTP/2: ``http2: true`` (h2c) or ``h2`` in ``tls.alpn``."""
    if getattr(cfg, "mode", "http") != "http":
        return False
    tls = getattr(cfg, "tls", None)
    if tls is not None:
        return "h2" in tls.alpn
    return bool(getattr(cfg, "http2", False))

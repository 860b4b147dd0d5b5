"""Errors of the HTTP layer."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke HTTP framing. ``status`` is what a client should be answered
    (for a server's error, the proxy answers 502 whatever this says)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

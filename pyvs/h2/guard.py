"""Flood counters of one HTTP/2 connection (sans-I/O: the clock is passed in).

The HTTP/2 attacks that hurt servers are cheap for the client and expensive for the
server: a stream opened and reset at once (rapid reset, CVE-2023-44487) makes the
proxy pick a server and start an exchange for nothing; PING and SETTINGS frames
each force an answer; empty DATA frames cost a parse each. Each kind is counted in
a fixed window; a connection over any limit is closed with GOAWAY
ENHANCE_YOUR_CALM (pyvs.h2.conn). Other connections are not touched: the counters
belong to the connection. (CONTINUATION floods are bounded by the codec,
pyvs.h2.codec: a header block may span at most 64 frames and twice
SETTINGS_MAX_HEADER_LIST_SIZE.) Streams refused for SETTINGS_MAX_CONCURRENT_STREAMS
count as resets: each costs a decode and an RST_STREAM.
"""

from __future__ import annotations

RESETS = 0
CONTROL = 1
EMPTY = 2
NAMES = ("RST_STREAM", "PING/SETTINGS/PRIORITY", "empty DATA")


class FloodGuard:
    """Counts RST_STREAM, control and empty DATA frames per ``window`` seconds."""

    __slots__ = ("counts", "limits", "start", "window")

    def __init__(self, window: float, max_resets: int, max_control: int, max_empty: int) -> None:
        self.window = window
        self.limits = (max_resets, max_control, max_empty)
        self.counts = [0, 0, 0]
        self.start = 0.0

    def hit(self, kind: int, now: float) -> bool:
        """Count one frame of ``kind``; True when the connection is over its limit."""
        if now - self.start >= self.window:
            self.start = now
            self.counts = [0, 0, 0]
        n = self.counts[kind] = self.counts[kind] + 1
        return n > self.limits[kind]

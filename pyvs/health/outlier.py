"""Passive outlier detection: eject servers that fail live traffic, Envoy style.

Workers count consecutive failures per server on the request path (a plain integer
per server) and report a server once it reaches ``consecutive_errors``; this class,
in the supervisor, decides whether to eject it and for how long. The n-th ejection
of a server lasts ``n * base_ejection`` (capped at ``max_ejection``), so a server
that keeps failing stays out longer each time; at most ``max_ejected_percent`` of a
backend's servers (but always at least one) may be ejected at once, so outlier
detection alone can never empty a backend.

Sans-I/O: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvs.config.health_schema import PassiveHealth


@dataclass
class Ejector:
    """Ejection bookkeeping for one backend."""

    cfg: PassiveHealth
    servers: int
    counts: dict[str, int] = field(default_factory=dict)  # ejections so far, per server
    until: dict[str, float] = field(default_factory=dict)  # currently ejected -> when it ends

    def limit(self) -> int:
        return max(1, self.servers * self.cfg.max_ejected_percent // 100)

    def eject(self, server: str, now: float) -> float | None:
        """Eject ``server`` if allowed; returns when the ejection ends, or None."""
        if server in self.until or len(self.until) >= self.limit():
            return None
        n = self.counts.get(server, 0) + 1
        self.counts[server] = n
        end = now + min(self.cfg.base_ejection * n, self.cfg.max_ejection)
        self.until[server] = end
        return end

    def expire(self, now: float) -> list[str]:
        """Servers whose ejection is over (removed from the ejected set)."""
        done = [s for s, end in self.until.items() if end <= now]
        for s in done:
            del self.until[s]
        return done

    def next_deadline(self) -> float | None:
        return min(self.until.values()) if self.until else None

"""What the simulator simulates: servers, request costs, arrivals and incidents.

Everything here is a frozen, validated value: the command line builds one
:class:`Workload`, and the engine runs every algorithm against that same value with
the same seed, so differences in the results come from the algorithms alone.

The server model
----------------
A server has ``workers`` parallel slots (threads, processes, cores) and a
``speed``: a request of cost ``c`` (seconds of work at speed 1) holds one slot for
``c / speed`` seconds. Requests beyond the slots wait in the server's FIFO queue; a
queue longer than ``queue_limit`` answers 503 at once (a *drop*). Its capacity is
``workers * speed / mean_cost`` requests per second, and the arrival rate is
``load`` times the sum of all capacities, so ``load`` 0.7 is a pool at 70 %.

The pool is heterogeneous on purpose (default speeds 4, 2, 2, 1, 1): it is what
separates algorithms that only count requests from those that see backlog.
Each server's configured weight is its speed, as an operator would set it.

Incidents
---------
``slow``: from ``at`` the server runs at ``factor`` times its speed (a noisy
neighbour, a GC storm), optionally until ``until``; the runtime is not told, only
latency-, backlog- and agent-aware algorithms can notice. ``fail``: at ``at`` the
server dies, losing what it was serving; health checks notice ``detect`` seconds
later; requests sent to it meanwhile are refused and retried once elsewhere. At
``until`` it comes back, again noticed ``detect`` later (then ramped by slow start
when ``slowstart`` is set).

Times may be given in seconds or as a percentage of the run (``"30%"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

COST_KINDS = ("constant", "exponential", "pareto")


@dataclass(frozen=True, slots=True)
class CostModel:
    """The distribution of request costs (seconds of work at speed 1)."""

    kind: str = "exponential"
    mean: float = 0.02
    alpha: float = 1.5  # Pareto shape; must exceed 1 for the mean to exist

    def __post_init__(self) -> None:
        if self.kind not in COST_KINDS:
            raise ValueError(f"cost kind must be one of {', '.join(COST_KINDS)}, got {self.kind!r}")
        if not self.mean > 0:
            raise ValueError("mean cost must be positive")
        if self.kind == "pareto" and not self.alpha > 1:
            raise ValueError("pareto alpha must be above 1 (otherwise the mean is infinite)")

    def sampler(self, rng: Random) -> Callable[[], float]:
        """A function drawing one cost; its long-run mean is ``mean``."""
        mean = self.mean
        if self.kind == "constant":
            return lambda: mean
        if self.kind == "exponential":
            rate = 1.0 / mean
            return lambda: rng.expovariate(rate)
        alpha = self.alpha
        scale = mean * (alpha - 1.0) / alpha  # Pareto(x_m, alpha) has mean x_m * alpha / (alpha - 1)
        return lambda: scale * rng.paretovariate(alpha)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    speed: float
    workers: int = 4

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"server {self.name}: speed must be positive")
        if self.workers < 1:
            raise ValueError(f"server {self.name}: workers must be at least 1")


@dataclass(frozen=True, slots=True)
class Incident:
    """``slow`` or ``fail`` on server ``server`` (an index) from ``at`` to ``until``."""

    kind: str
    server: int
    at: float
    until: float | None = None
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("slow", "fail"):
            raise ValueError(f"incident kind must be slow or fail, got {self.kind!r}")
        if self.at < 0 or (self.until is not None and self.until <= self.at):
            raise ValueError("incident must start at or after 0 and end after it starts")
        if self.kind == "slow" and not self.factor > 0:
            raise ValueError("slow-down factor must be positive")


@dataclass(frozen=True, slots=True)
class Workload:
    servers: tuple[ServerSpec, ...]
    cost: CostModel = field(default_factory=CostModel)
    load: float = 0.7
    duration: float = 10.0
    clients: int = 10_000
    zipf: float = 0.8
    incidents: tuple[Incident, ...] = ()
    queue_limit: int = 64
    detect: float = 0.5
    agent_interval: float = 1.0
    slowstart: float = 0.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("at least one server is needed")
        if not 0 < self.load <= 5:
            raise ValueError("load must be in (0, 5] (a fraction of total capacity)")
        if not self.duration > 0:
            raise ValueError("duration must be positive")
        if self.clients < 1:
            raise ValueError("clients must be at least 1")
        if self.zipf < 0:
            raise ValueError("zipf exponent must not be negative")
        if self.queue_limit < 0 or self.detect < 0 or self.agent_interval <= 0 or self.slowstart < 0:
            raise ValueError("queue_limit, detect and slowstart must be >= 0, agent_interval > 0")
        for inc in self.incidents:
            if not 0 <= inc.server < len(self.servers):
                raise ValueError(f"incident names server #{inc.server}, which does not exist")

    @property
    def capacity(self) -> float:
        """Requests per second the whole pool can serve at nominal speed."""
        return sum(s.workers * s.speed for s in self.servers) / self.cost.mean

    @property
    def rate(self) -> float:
        """Arrival rate in requests per second."""
        return self.load * self.capacity

    def client_weights(self) -> list[float]:
        """Cumulative Zipf popularity of the clients (for ``random.choices``)."""
        acc = 0.0
        out = []
        for k in range(1, self.clients + 1):
            acc += 1.0 / k**self.zipf
            out.append(acc)
        return out


def parse_speeds(text: str, workers: int = 4) -> tuple[ServerSpec, ...]:
    """``"4,2,2,1,1"`` -> five servers ``s1``..``s5`` with those speeds."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("expected speeds like 4,2,2,1,1")
    try:
        speeds = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected speeds like 4,2,2,1,1, got {text!r}") from None
    return tuple(ServerSpec(f"s{i + 1}", s, workers) for i, s in enumerate(speeds))


def parse_time(text: str, duration: float) -> float:
    """``"30%"`` of the run, or seconds (``"3"``, ``"3s"``, ``"1500ms"``)."""
    text = text.strip().lower()
    if text.endswith("%"):
        return float(text[:-1]) / 100.0 * duration
    if text.endswith("ms"):
        return float(text[:-2]) / 1000.0
    return float(text.removesuffix("s"))


def _server_index(name: str, servers: tuple[ServerSpec, ...]) -> int:
    for i, s in enumerate(servers):
        if s.name == name:
            return i
    raise ValueError(f"no server named {name!r} (servers are {', '.join(s.name for s in servers)})")


def parse_slow(text: str, servers: tuple[ServerSpec, ...], duration: float) -> Incident:
    """``"s2:30%:0.25"`` or ``"s2:3s:0.25:8s"`` (NAME:AT:FACTOR[:UNTIL])."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"expected NAME:AT:FACTOR[:UNTIL], got {text!r}")
    until = parse_time(parts[3], duration) if len(parts) == 4 else None
    return Incident("slow", _server_index(parts[0], servers), parse_time(parts[1], duration), until, float(parts[2]))


def parse_fail(text: str, servers: tuple[ServerSpec, ...], duration: float) -> Incident:
    """``"s5:55%:80%"`` (NAME:AT[:UNTIL]); without UNTIL the server stays dead."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected NAME:AT[:UNTIL], got {text!r}")
    until = parse_time(parts[2], duration) if len(parts) == 3 else None
    return Incident("fail", _server_index(parts[0], servers), parse_time(parts[1], duration), until)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted list; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]

"""Per-worker counters and their aggregation in the supervisor.

Counters are plain integer attributes bumped on the request path (no locks, no
syscalls); the worker ships a snapshot every ``global.stats_interval`` and the
supervisor sums the snapshots of all workers. Counter names are declared once here
(``COUNTERS``) so the admin API, the CLI and later /metrics read the same values.
"""

from __future__ import annotations

from typing import Any

COUNTERS = (
    "client_connections",
    "requests",
    "responses_1xx",
    "responses_2xx",
    "responses_3xx",
    "responses_4xx",
    "responses_5xx",
    "bad_requests",
    "retries",
    "connect_timeouts",
    "server_timeouts",
    "client_timeouts",
    "truncated_responses",
    "upgrades",
    "redispatches",  # persistence: a sticky server could not take the request (pyvs/persist)
    "local_replies",  # answered by a route's filter (respond, redirect, deny, ACL): no server asked
    # layer 4, user space (pyvs/l4): tcp connections and bytes, queue, PROXY headers, udp flows
    "l4_connections",
    "l4_bytes_in",
    "l4_bytes_out",
    "l4_queued",
    "l4_queue_full",
    "l4_queue_timeouts",
    "l4_idle_timeouts",
    "l4_proxy_errors",
    "udp_sessions",
    "udp_evictions",
    "udp_timeouts",
    "udp_datagrams_in",
    "udp_datagrams_out",
    "udp_drops",
)


class WorkerStats:
    """Counters of one worker process (attribute names are ``COUNTERS``)."""

    __slots__ = COUNTERS

    client_connections: int
    requests: int
    responses_1xx: int
    responses_2xx: int
    responses_3xx: int
    responses_4xx: int
    responses_5xx: int
    bad_requests: int
    retries: int
    local_replies: int
    connect_timeouts: int
    server_timeouts: int
    client_timeouts: int
    truncated_responses: int
    upgrades: int
    redispatches: int
    l4_connections: int
    l4_bytes_in: int
    l4_bytes_out: int
    l4_queued: int
    l4_queue_full: int
    l4_queue_timeouts: int
    l4_idle_timeouts: int
    l4_proxy_errors: int
    udp_sessions: int
    udp_evictions: int
    udp_timeouts: int
    udp_datagrams_in: int
    udp_datagrams_out: int
    udp_drops: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def count_status(self, status: int) -> None:
        klass = status // 100
        if klass == 2:
            self.responses_2xx += 1
        elif klass == 3:
            self.responses_3xx += 1
        elif klass == 4:
            self.responses_4xx += 1
        elif klass == 5:
            self.responses_5xx += 1
        elif klass == 1:
            self.responses_1xx += 1

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


# Values that are the same in every worker: taken once, not summed.
_NOT_SUMMED = frozenset({"weight", "effective_weight"})


def _add(into: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, bool) or not isinstance(v, int) or k in _NOT_SUMMED:
            into.setdefault(k, v)
        else:
            into[k] = into.get(k, 0) + v


def aggregate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum worker reports: ``{"totals": {...}, "backends": [{..., "servers": [...]}]}``."""
    totals: dict[str, Any] = {name: 0 for name in COUNTERS}
    backends: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for rep in reports:
        _add(totals, rep.get("stats", {}))
        for b in rep.get("backends", []):
            agg = backends.get(b["name"])
            if agg is None:
                agg = backends[b["name"]] = {"name": b["name"], "balance": b["balance"], "no_server": 0,
                                             "servers": {}}
                order.append(b["name"])
            agg["no_server"] += b.get("no_server", 0)
            if "persistence" in b:  # per-backend persistence counters (pyvs/persist)
                _add(agg.setdefault("persistence", {}), b["persistence"])
            for s in b["servers"]:
                into = agg["servers"].setdefault(s["name"], {})
                _add(into, s)
    out_backends = []
    opened = reused = 0
    for name in order:
        b = backends[name]
        servers = list(b["servers"].values())
        for s in servers:
            opened += s.get("connections_opened", 0)
            reused += s.get("connections_reused", 0)
        out_backends.append({**b, "servers": servers})
    totals["backend_connections_opened"] = opened
    totals["backend_connections_reused"] = reused
    totals["reuse_ratio"] = round(totals["requests"] / opened, 2) if opened else None
    return {"totals": totals, "backends": out_backends}

"""Per-worker counters and their aggregation in the supervisor.

Counters are plain integer attributes bumped on the request path (no locks, no
syscalls); the worker ships a snapshot every ``global.stats_interval`` and the
supervisor sums the snapshots of all workers. Counter names are declared once here
(``COUNTERS``) so the admin API, the CLI and later /metrics read the same values.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
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
    # http queue (pyvs/l7/queue.py): 503 because the queue was full / the wait timed out;
    # rate limits (pyvs/l7/filters/ratelimit.py): requests refused
    "queue_full",
    "queue_timeouts",
    "rate_limited",
    "client_cap_refused",  # connections closed at accept by max_client_connections
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
    # access logs (pyvs/logs): lines written, lines dropped (slow or full sink, write errors)
    "access_log_lines",
    "access_log_dropped",
    # HTTP/2 clients (pyvs/h2): connections opened and closed (open now: the difference),
    # streams opened, refused (over max_concurrent_streams, or after GOAWAY), GOAWAY frames
    # sent, RST_STREAM frames received, connections closed for a flood by kind
    "h2_connections",
    "h2_connections_closed",
    "h2_streams",
    "h2_streams_refused",
    "h2_goaways",
    "h2_resets_received",
    "h2_flood_resets",
    "h2_flood_control",
    "h2_flood_empty",
    "h2_flood_continuation",
)

# Traffic as reported (status["traffic"], per listener, backend and server): latency
# buckets (upper bounds LATENCY_BOUNDS, then +Inf), the sum of latencies, responses by
# status class (other, 1xx ... 5xx), response bytes, retries (extra attempts the
# requests needed). /metrics and the admin API's rates read this layout.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NBUCKETS = len(LATENCY_BOUNDS) + 1
LAT_SUM = NBUCKETS
STATUS0 = LAT_SUM + 1
BYTES = STATUS0 + 6
RETRIES = BYTES + 1
TRAFFIC_LEN = RETRIES + 1



def histogram(t: list[float]) -> list[float]:
    """Requests per latency bucket of a reported traffic list."""
    return t[:NBUCKETS]


def by_class(t: list[float], klass: int) -> float:
    """Responses of status class ``klass`` (5 for 5xx; 0: others) of a reported traffic list."""
    return t[STATUS0 + klass] if 1 <= klass <= 5 else t[STATUS0]


# Inside a worker, one list per (listener, server) pair -- server None for requests no
# server answered -- that a finished request bumps with one bisect and three increments
# (H1Connection._ended): a latency histogram per status class at slot
# ``status // 100 * NBUCKETS + bucket`` (classes 0 ... 9; 0 is a connection cut before
# any status), then the latency sum (PAIR_SUM), bytes (PAIR_BYTES) and retries
# (PAIR_RETRIES, bumped only by a request that needed any). Turned into
# the reported layout once per stats report (:func:`reported`).
PAIR_SUM = 10 * NBUCKETS
PAIR_BYTES = PAIR_SUM + 1
PAIR_RETRIES = PAIR_BYTES + 1
PAIR_LEN = PAIR_RETRIES + 1


def observe_py(t: list[float], status: int, dur: float, nbytes: int) -> None:
    """One finished request into a traffic list (the C helper's twin, same result)."""
    t[status // 100 * NBUCKETS + bisect_left(LATENCY_BOUNDS, dur)] += 1
    t[PAIR_SUM] += dur
    t[PAIR_BYTES] += nbytes


observe: Callable[[list[float], int, float, int], None] = observe_py
try:  # one C call per request (pyvs/runtime/_traffic.c): ~3,000 instructions less
    from pyvs.runtime import _traffic

    _traffic.bind(LATENCY_BOUNDS, PAIR_SUM, PAIR_BYTES)
    observe = _traffic.observe
except ImportError:  # built without a C compiler: same behaviour, slower
    pass


def reported(pair: list[float]) -> list[float]:
    """A pair list in the reported layout."""
    out = [0.0] * TRAFFIC_LEN
    for c in range(10):
        row = pair[c * NBUCKETS : (c + 1) * NBUCKETS]
        for b, v in enumerate(row):
            out[b] += v
        out[STATUS0 + (c if 1 <= c <= 5 else 0)] += sum(row)
    out[LAT_SUM] = pair[PAIR_SUM]
    out[BYTES] = pair[PAIR_BYTES]
    out[RETRIES] = pair[PAIR_RETRIES]
    return out


class WorkerStats:
    """Counters of one worker process (attribute names are ``COUNTERS``)."""

    __slots__ = (*COUNTERS, "pairs")

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
    queue_full: int
    queue_timeouts: int
    rate_limited: int
    client_cap_refused: int
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
    access_log_lines: int
    access_log_dropped: int
    h2_connections: int
    h2_connections_closed: int
    h2_streams: int
    h2_streams_refused: int
    h2_goaways: int
    h2_resets_received: int
    h2_flood_resets: int
    h2_flood_control: int
    h2_flood_empty: int
    h2_flood_continuation: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        # listener name -> {ServerState or None: traffic list}; the ServerState object is
        # the key (identity hash): nothing is built per request.
        self.pairs: dict[str, dict[Any, list[float]]] = {}

    def traffic(self, listener: str) -> dict[Any, list[float]]:
        """The traffic lists of ``listener`` by server (the dict a connection keeps)."""
        return self.pairs.setdefault(listener, {})

    def observe(self, traffic: dict[Any, list[float]], server: Any, status: int, dur: float, nbytes: int,
                retried: int = 0) -> None:
        """A request ended (the inline version is H1Connection._ended; this one is for
        other callers and tests)."""
        t = traffic.get(server)
        if t is None:
            t = traffic[server] = [0.0] * PAIR_LEN
        t[status // 100 * NBUCKETS + bisect_left(LATENCY_BOUNDS, dur)] += 1
        t[PAIR_SUM] += dur
        t[PAIR_BYTES] += nbytes
        if retried > 0:
            t[PAIR_RETRIES] += retried

    def traffic_report(self) -> dict[str, Any]:
        """Listener and server sums of the pairs, for the stats message (cumulative)."""
        listeners: dict[str, list[float]] = {}
        servers: dict[Any, list[float]] = {}
        for name, by_server in self.pairs.items():
            into = listeners[name] = [0.0] * TRAFFIC_LEN
            for server, pair in by_server.items():
                t = reported(pair)
                _add_list(into, t)
                if server is not None:
                    _add_list(servers.setdefault(server, [0.0] * TRAFFIC_LEN), t)
        return {
            "listeners": listeners,
            "servers": [[s.backend.name, s.name, t] for s, t in servers.items()],
        }

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
            if "queue" in b:  # per-backend http queue counters (pyvs/l7/queue.py)
                _add(agg.setdefault("queue", {}), b["queue"])
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
    return {"totals": totals, "backends": out_backends, "traffic": aggregate_traffic(reports)}


def _add_list(into: list[float], src: list[float]) -> None:
    for i, v in enumerate(src[:TRAFFIC_LEN]):
        into[i] += v


def aggregate_traffic(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Traffic lists summed over workers: per listener, per server, and per backend
    (its servers' sum). Lists keep the layout of :data:`TRAFFIC_LEN`."""
    listeners: dict[str, list[float]] = {}
    servers: dict[tuple[str, str], list[float]] = {}
    for rep in reports:
        tr = rep.get("traffic")
        if not tr:
            continue
        for name, t in tr.get("listeners", {}).items():
            _add_list(listeners.setdefault(name, [0.0] * TRAFFIC_LEN), t)
        for bname, sname, t in tr.get("servers", []):
            _add_list(servers.setdefault((bname, sname), [0.0] * TRAFFIC_LEN), t)
    backends: dict[str, list[float]] = {}
    for (bname, _), t in servers.items():
        _add_list(backends.setdefault(bname, [0.0] * TRAFFIC_LEN), t)
    return {
        "bounds": list(LATENCY_BOUNDS),
        "listeners": listeners,
        "backends": backends,
        "servers": [[b, s, t] for (b, s), t in servers.items()],
    }

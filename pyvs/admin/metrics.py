"""Prometheus text exposition of the supervisor's status.

The same numbers as ``/status`` (one source: :meth:`Supervisor.status`), named as
Prometheus asks (``pyvs_..._total`` counters, ``_seconds``, ``_bytes``), with
``listener``, ``backend`` and ``server`` labels, plus the VRRP instances' own metrics
when VRRP runs (``extra``). Hand-formatted: the values are already aggregated over
the workers, so a client library's registry would only add a second copy of them.

Latency histograms come from the traffic lists the workers keep per listener and per
server (:mod:`pyvs.runtime.stats`: fixed buckets, one bisect per request); a
backend's histogram is the sum of its servers'. Latencies are measured on the event
loop's clock, which has millisecond resolution. docs/operations.md lists every metric.
"""

from __future__ import annotations

from typing import Any

from pyvs.runtime.stats import BYTES, COUNTERS, LAT_SUM, LATENCY_BOUNDS, RETRIES, STATUS0

_STATES = ("UP", "DOWN", "DRAIN", "MAINT")
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_SERVER_COUNTERS = {
    "requests": "Requests sent to the server.",
    "connections_opened": "Connections opened to the server.",
    "connections_reused": "Requests sent on a reused pooled connection.",
    "connect_failures": "Failed connection attempts.",
    "responses_5xx": "5xx responses and failed exchanges.",
}


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class _Out:
    """Lines of the exposition, one HELP/TYPE header per metric family."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def add(self, name: str, labels: str, value: float) -> None:
        self.lines.append(f"{name}{{{labels}}} {_num(value)}" if labels else f"{name} {_num(value)}")

    def traffic(self, prefix: str, what: str, rows: list[tuple[str, list[float]]], retries: bool = True) -> None:
        """Responses by class, bytes, retries and the latency histogram of each labelled row."""
        self.family(f"{prefix}_responses_total", "counter", f"Responses by status class, per {what}.")
        for labels, t in rows:
            for i, c in enumerate(_CLASSES):
                self.add(f"{prefix}_responses_total", f'{labels},code="{c}"', t[STATUS0 + 1 + i])
        self.family(f"{prefix}_response_bytes_total", "counter", f"Response bytes forwarded, per {what}.")
        for labels, t in rows:
            self.add(f"{prefix}_response_bytes_total", labels, t[BYTES])
        if retries:
            self.family(f"{prefix}_retries_total", "counter", f"Extra attempts on another server, per {what}.")
            for labels, t in rows:
                self.add(f"{prefix}_retries_total", labels, t[RETRIES] if len(t) > RETRIES else 0)
        name = f"{prefix}_request_duration_seconds"
        self.family(name, "histogram", f"Time from the request head to the end of the response, per {what}.")
        for labels, t in rows:
            cumulative = 0.0
            for i, bound in enumerate(LATENCY_BOUNDS):
                cumulative += t[i]
                self.add(f"{name}_bucket", f'{labels},le="{bound}"', cumulative)
            cumulative += t[len(LATENCY_BOUNDS)]
            self.add(f"{name}_bucket", f'{labels},le="+Inf"', cumulative)
            self.add(f"{name}_sum", labels, round(t[LAT_SUM], 6))
            self.add(f"{name}_count", labels, cumulative)


def render(status: dict[str, Any], extra: str = "") -> str:
    out = _Out()
    totals = status.get("totals", {})
    for name in COUNTERS:
        out.family(f"pyvs_{name}_total", "counter", f"{name.replace('_', ' ')} (all workers).")
        out.add(f"pyvs_{name}_total", "", int(totals.get(name, 0)))
    out.family("pyvs_workers", "gauge", "Worker processes running.")
    out.add("pyvs_workers", "", sum(1 for w in status.get("workers", []) if w.get("pid")))
    out.family("pyvs_client_connections", "gauge", "Client connections open now (all workers).")
    out.add("pyvs_client_connections", "", sum(int(w.get("connections", 0)) for w in status.get("workers", [])))
    out.family("pyvs_h2_connections", "gauge", "HTTP/2 client connections open now (all workers).")
    h2_open = int(totals.get("h2_connections", 0)) - int(totals.get("h2_connections_closed", 0))
    out.add("pyvs_h2_connections", "", h2_open)
    if totals.get("reuse_ratio") is not None:
        out.family("pyvs_requests_per_backend_connection", "gauge",
                   "Requests sent per server connection opened (connection reuse).")
        out.add("pyvs_requests_per_backend_connection", "", totals["reuse_ratio"])

    traffic = status.get("traffic", {})
    listeners = traffic.get("listeners", {})
    out.traffic("pyvs_listener", "listener", [(f'listener="{_esc(n)}"', t) for n, t in listeners.items()])
    backends = status.get("backends", [])
    _backends(out, backends, traffic.get("backends", {}))
    _servers(out, backends, traffic.get("servers", []))
    _pageviews(out, status.get("pageviews") or {})
    _accel(out, status.get("caches") or {}, status.get("compression") or {})
    if status.get("tls"):
        _tls(out, status["tls"])
    if status.get("dns"):
        _dns(out, status["dns"])
    text = "\n".join(out.lines) + "\n"
    return text + extra if extra else text


_CACHE_COUNTERS = (("hits", "Requests answered from the cache."),
                   ("misses", "Cacheable requests sent to a server."),
                   ("stores", "Responses stored."),
                   ("collapsed", "Requests that waited for another's fetch of the same object."),
                   ("evictions", "Objects evicted to keep the cache within its size."))


def _accel(out: _Out, caches: dict[str, dict[str, Any]], compression: dict[str, int]) -> None:
    """Cache counters per cache section, compression counters (pyvs/accel)."""
    if caches:
        for name, help_text in _CACHE_COUNTERS:
            out.family(f"pyvs_cache_{name}_total", "counter", help_text)
            for where, st in caches.items():
                out.add(f"pyvs_cache_{name}_total", f'cache="{_esc(where)}"', int(st.get(name, 0)))
        for name, help_text in (("entries", "Objects stored now."), ("bytes", "Bytes stored now.")):
            out.family(f"pyvs_cache_{name}", "gauge", help_text)
            for where, st in caches.items():
                out.add(f"pyvs_cache_{name}", f'cache="{_esc(where)}"', int(st.get(name, 0)))
    if compression:
        for name, help_text in (("responses", "Responses compressed."),
                                ("bytes_in", "Response bytes before compression."),
                                ("bytes_out", "Response bytes after compression.")):
            out.family(f"pyvs_compression_{name}_total", "counter", help_text)
            out.add(f"pyvs_compression_{name}_total", "", int(compression.get(name, 0)))


def _tls(out: _Out, tls: dict[str, Any]) -> None:
    """TLS listeners: handshakes, failures by reason, resumptions, versions, ALPN,
    session tickets (pyvs/tls/stats.py)."""
    rows = [(f'listener="{_esc(name)}"', v) for name, v in (tls.get("listeners") or {}).items()]
    out.family("pyvs_tls_handshakes_total", "counter", "TLS handshakes by result (completed, failed), per listener.")
    for labels, v in rows:
        out.add("pyvs_tls_handshakes_total", f'{labels},result="completed"', int(v.get("handshakes", 0)))
        if v.get("failed") is not None:  # (None: not counted, with uvloop's own TLS)
            out.add("pyvs_tls_handshakes_total", f'{labels},result="failed"', int(v["failed"]))
    out.family("pyvs_tls_handshake_failures_total", "counter",
               "Failed TLS handshakes by reason (client_cert: mTLS verification), per listener.")
    for labels, v in rows:
        for reason, n in (v.get("failures") or {}).items():
            out.add("pyvs_tls_handshake_failures_total", f'{labels},reason="{_esc(reason)}"', int(n))
    out.family("pyvs_tls_sessions_resumed_total", "counter",
               "Completed TLS handshakes that resumed a session (ticket or id), per listener.")
    for labels, v in rows:
        out.add("pyvs_tls_sessions_resumed_total", labels, int(v.get("resumed", 0)))
    out.family("pyvs_tls_protocol_versions_total", "counter", "Completed TLS handshakes by version, per listener.")
    for labels, v in rows:
        for version, n in (v.get("versions") or {}).items():
            out.add("pyvs_tls_protocol_versions_total", f'{labels},version="{_esc(version)}"', int(n))
    out.family("pyvs_tls_alpn_total", "counter",
               "Completed TLS handshakes by the protocol ALPN chose (listeners offering a choice).")
    for labels, v in rows:
        for proto, n in (v.get("alpn") or {}).items():
            out.add("pyvs_tls_alpn_total", f'{labels},protocol="{_esc(proto)}"', int(n))
    out.family("pyvs_tls_ticket_key_rotations_total", "counter",
               "Session-ticket key changes since the listener's keys were loaded (start or reload).")
    for labels, v in rows:
        out.add("pyvs_tls_ticket_key_rotations_total", labels, int(v.get("ticket_key_rotations", 0)))
    tickets = tls.get("tickets") or {}
    if tickets:
        out.family("pyvs_tls_tickets_total", "counter",
                   "Session tickets issued, resumed (current key), renewed (previous key), unknown (all workers).")
        for event, n in tickets.items():
            out.add("pyvs_tls_tickets_total", f'event="{_esc(event)}"', int(n))
    if tls.get("ticket_helper") is not None:
        out.family("pyvs_tls_ticket_helper", "gauge", "1 when pyvs's rotating ticket keys (the C helper) are in use.")
        out.add("pyvs_tls_ticket_helper", "", 1 if tls["ticket_helper"] else 0)


_DNS_COUNTERS = (("truncated", "UDP answers sent truncated (TC set): too large for the client's UDP size."),
                 ("malformed", "Queries dnspython could not parse (answered FORMERR when a header was there)."),
                 ("dropped", "Queries not answered: responses, broken EDNS, less than a header."),
                 ("slow", "Queries answered through dnspython's parser (ECS, other opcodes, malformed)."),
                 ("rebuilds", "Answer table rebuilds (start, health and site changes), summed over workers."))
_DNS_NAMES = {"slow": "slow_path", "rebuilds": "answer_rebuilds"}


def _dns(out: _Out, dns: dict[str, Any]) -> None:
    """The DNS responder's counters per dns listener, summed over the workers (pyvs/dns/stats.py)."""
    rows = [(f'listener="{_esc(name)}"', v) for name, v in (dns.get("listeners") or {}).items()]
    out.family("pyvs_dns_queries_total", "counter", "DNS queries received, per listener and transport.")
    for labels, v in rows:
        for transport in ("udp", "tcp"):
            out.add("pyvs_dns_queries_total", f'{labels},transport="{transport}"', int(v.get(transport, 0)))
    out.family("pyvs_dns_answers_total", "counter", "DNS answers sent, per listener and response code.")
    for labels, v in rows:
        for rcode, n in (v.get("rcodes") or {}).items():
            out.add("pyvs_dns_answers_total", f'{labels},rcode="{_esc(rcode)}"', int(n))
    out.family("pyvs_dns_answers_by_qtype_total", "counter", "DNS answers sent, per listener and question type.")
    for labels, v in rows:
        for qtype, n in (v.get("qtypes") or {}).items():
            out.add("pyvs_dns_answers_by_qtype_total", f'{labels},qtype="{_esc(qtype)}"', int(n))
    for key, help_text in _DNS_COUNTERS:
        name = f"pyvs_dns_{_DNS_NAMES.get(key, key)}_total"
        out.family(name, "counter", help_text)
        for labels, v in rows:
            out.add(name, labels, int(v.get(key, 0)))
    out.family("pyvs_dns_answers_precomputed", "gauge", "Answers precomputed for the configured names.")
    for labels, v in rows:
        out.add("pyvs_dns_answers_precomputed", labels, int(v.get("precomputed", 0)))
    sites = [(f'{labels},site="{_esc(site)}"', s) for labels, v in rows for site, s in (v.get("sites") or {}).items()]
    if sites:
        out.family("pyvs_dns_site_polls_total", "counter", "Polls of a remote GSLB site's status, summed over workers.")
        for labels, s in sites:
            out.add("pyvs_dns_site_polls_total", labels, int(s.get("polls", 0)))
        out.family("pyvs_dns_site_poll_failures_total", "counter",
                   "Polls of a remote GSLB site that got no usable answer, summed over workers.")
        for labels, s in sites:
            out.add("pyvs_dns_site_poll_failures_total", labels, int(s.get("failed", 0)))
        out.family("pyvs_dns_site_up", "gauge", "1 when every worker sees the remote GSLB site up.")
        for labels, s in sites:
            if s.get("up") is not None:  # (None: no worker has said yet, as just after a reload)
                out.add("pyvs_dns_site_up", labels, 1 if s["up"] else 0)


def _backends(out: _Out, backends: list[dict[str, Any]], traffic: dict[str, list[float]]) -> None:
    out.traffic("pyvs_backend", "backend", [(f'backend="{_esc(n)}"', t) for n, t in traffic.items()])
    out.family("pyvs_backend_no_server_total", "counter", "Requests that found no server up.")
    for b in backends:
        out.add("pyvs_backend_no_server_total", f'backend="{_esc(b["name"])}"', int(b.get("no_server", 0)))
    out.family("pyvs_backend_connection_reuse_ratio", "gauge",
               "Share of requests sent on a reused pooled connection (0-1).")
    for b in backends:
        reqs = sum(int(s.get("requests", 0)) for s in b.get("servers", []))
        reused = sum(int(s.get("connections_reused", 0)) for s in b.get("servers", []))
        out.add("pyvs_backend_connection_reuse_ratio", f'backend="{_esc(b["name"])}"',
                round(reused / reqs, 4) if reqs else 0)
    out.family("pyvs_backend_servers_up", "gauge", "Servers in state UP.")
    for b in backends:
        up = sum(1 for s in b.get("servers", []) if s.get("state", "UP") == "UP")
        out.add("pyvs_backend_servers_up", f'backend="{_esc(b["name"])}"', up)


def _servers(out: _Out, backends: list[dict[str, Any]], traffic: list[list[Any]]) -> None:
    servers = [(b["name"], s) for b in backends for s in b.get("servers", [])]

    def labels(bname: str, s: dict[str, Any]) -> str:
        return f'backend="{_esc(bname)}",server="{_esc(s["name"])}"'

    for key, help_text in _SERVER_COUNTERS.items():
        out.family(f"pyvs_server_{key}_total", "counter", help_text)
        for bname, s in servers:
            out.add(f"pyvs_server_{key}_total", labels(bname, s), int(s.get(key, 0)))
    out.traffic("pyvs_server", "server", [(f'backend="{_esc(b)}",server="{_esc(n)}"', t) for b, n, t in traffic],
                retries=False)
    out.family("pyvs_server_active", "gauge", "Requests in flight to the server.")
    for bname, s in servers:
        out.add("pyvs_server_active", labels(bname, s), int(s.get("active", 0)))
    if any("queued" in s for _, s in servers):
        out.family("pyvs_server_queued", "gauge", "Requests waiting for a connection slot of the server (maxconn).")
        for bname, s in servers:
            out.add("pyvs_server_queued", labels(bname, s), int(s.get("queued", 0)))
    out.family("pyvs_server_weight", "gauge", "Configured weight (runtime changes included).")
    for bname, s in servers:
        out.add("pyvs_server_weight", labels(bname, s), int(s.get("weight", 0)))
    out.family("pyvs_server_state", "gauge", "1 for the server's current health state.")
    for bname, s in servers:
        current = s.get("state", "UP")
        for st in _STATES:
            out.add("pyvs_server_state", f'{labels(bname, s)},state="{st}"', 1 if st == current else 0)
    checked = [(b, s, s["health"]) for b, s in servers if isinstance(s.get("health"), dict)]
    out.family("pyvs_server_check_duration_seconds", "gauge", "Duration of the last health check.")
    for bname, s, h in checked:
        last = h.get("last_check")
        if last:
            out.add("pyvs_server_check_duration_seconds", labels(bname, s), round(last["duration_ms"] / 1000, 6))
    out.family("pyvs_server_check_success", "gauge", "1 when the last health check passed.")
    for bname, s, h in checked:
        last = h.get("last_check")
        if last:
            out.add("pyvs_server_check_success", labels(bname, s), 1 if last["ok"] else 0)
    out.family("pyvs_server_checks_total", "counter", "Health checks run.")
    for bname, s, h in checked:
        out.add("pyvs_server_checks_total", labels(bname, s), int(h.get("checks", 0)))
    out.family("pyvs_server_state_transitions_total", "counter", "Health state changes.")
    for bname, s, h in checked:
        out.add("pyvs_server_state_transitions_total", labels(bname, s), int(h.get("transitions", 0)))


def _pageviews(out: _Out, pv: dict[str, Any]) -> None:
    vhosts = pv.get("vhosts") or {}
    if not vhosts:
        return
    out.family("pyvs_pageviews_last_minute", "gauge", "Page views in the last whole minute, per vhost.")
    for v, d in vhosts.items():
        out.add("pyvs_pageviews_last_minute", f'vhost="{_esc(v)}"', int(d.get("pv_last_minute", 0)))
    out.family("pyvs_unique_visitors", "gauge", "Distinct clients (HyperLogLog estimate) this hour and this day.")
    for v, d in vhosts.items():
        out.add("pyvs_unique_visitors", f'vhost="{_esc(v)}",window="hour"', int(d.get("uv_hour", 0)))
        out.add("pyvs_unique_visitors", f'vhost="{_esc(v)}",window="day"', int(d.get("uv_day", 0)))

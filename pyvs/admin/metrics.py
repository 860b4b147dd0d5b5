"""Prometheus text exposition of the supervisor's status.

The same numbers as ``/status`` (one source: :meth:`Supervisor.status`), as
counters and gauges with ``backend``/``server`` labels, plus the VRRP instances'
own metrics when VRRP runs. Hand-formatted: the values are already aggregated, so
a client library's registry would only add a second copy of them.
"""

from __future__ import annotations

from typing import Any

from pyvs.runtime.stats import COUNTERS

_STATES = ("UP", "DOWN", "DRAIN", "MAINT")
_SERVER_COUNTERS = {
    "requests": "Requests sent to the server.",
    "connections_opened": "Connections opened to the server.",
    "connections_reused": "Requests sent on a reused pooled connection.",
    "connect_failures": "Failed connection attempts.",
    "responses_5xx": "5xx responses and failed exchanges.",
}


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(status: dict[str, Any], extra: str = "") -> str:
    out: list[str] = []
    totals = status.get("totals", {})
    for name in COUNTERS:
        metric = f"pyvs_{name}_total"
        out += [f"# HELP {metric} {name.replace('_', ' ')} (all workers).", f"# TYPE {metric} counter",
                f"{metric} {int(totals.get(name, 0))}"]
    out += ["# HELP pyvs_workers Worker processes running.", "# TYPE pyvs_workers gauge",
            f"pyvs_workers {sum(1 for w in status.get('workers', []) if w.get('pid'))}"]
    servers = [(b["name"], s) for b in status.get("backends", []) for s in b.get("servers", [])]
    for key, help_text in _SERVER_COUNTERS.items():
        metric = f"pyvs_server_{key}_total"
        out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for bname, s in servers:
            out.append(f'{metric}{{backend="{_esc(bname)}",server="{_esc(s["name"])}"}} {int(s.get(key, 0))}')
    out += ["# HELP pyvs_server_active Requests in flight to the server.", "# TYPE pyvs_server_active gauge"]
    for bname, s in servers:
        labels = f'backend="{_esc(bname)}",server="{_esc(s["name"])}"'
        out.append(f"pyvs_server_active{{{labels}}} {int(s.get('active', 0))}")
    out += ["# HELP pyvs_server_state 1 for the server's current health state.", "# TYPE pyvs_server_state gauge"]
    for bname, s in servers:
        current = s.get("state", "UP")
        for st in _STATES:
            out.append(
                f'pyvs_server_state{{backend="{_esc(bname)}",server="{_esc(s["name"])}",state="{st}"}} '
                f"{1 if st == current else 0}"
            )
    text = "\n".join(out) + "\n"
    return text + extra if extra else text

"""Terminal tables for ``pyvs ctl`` (rich): the same documents ``--json`` prints raw."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"UP": "green", "DOWN": "bold red", "DRAIN": "yellow", "MAINT": "dim"}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _ms(lat: dict[str, Any] | None, key: str = "p95_ms") -> str:
    v = (lat or {}).get(key)
    return "-" if v is None else f"{v:.1f} ms"


def _check(s: dict[str, Any]) -> str:
    if not s.get("checked"):
        return "-"
    c = s.get("last_check")
    if not c:
        return "pending"
    return f"{'ok' if c['ok'] else 'FAIL'} {c['detail']} ({c['duration_ms']} ms, {c['age_s']} s ago)"


def servers_table(backends: list[dict[str, Any]]) -> Table:
    t = Table(title="servers", title_justify="left")
    for col, right in (("backend", False), ("server", False), ("address", False), ("state", False),
                       ("weight", True), ("active", True), ("req/s", True), ("errors", True), ("p95", True),
                       ("requests", True), ("last check", False)):
        t.add_column(col, justify="right" if right else "left", no_wrap=col != "last check")
    for b in backends:
        for s in b["servers"]:
            weight = str(s["weight"]) + (" backup" if s.get("backup") else "")
            t.add_row(b["name"], s["name"], str(s.get("address") or ""),
                      Text(s["state"], style=STATE_STYLE.get(s["state"], "")), weight, str(s["active"]),
                      f"{s['req_per_s']:.1f}", _pct(s["error_rate"]), _ms(s.get("latency")), f"{s['requests']:,}",
                      _check(s))
    return t


def backends_table(backends: list[dict[str, Any]]) -> Table:
    t = Table(title="backends", title_justify="left")
    for col in ("backend", "balance", "up", "active", "req/s", "errors", "p50", "p95", "p99", "requests", "no server"):
        t.add_column(col, justify="left" if col in ("backend", "balance") else "right")
    for b in backends:
        up = f"{b['servers_up']}/{b['servers_total']}"
        t.add_row(b["name"], str(b.get("balance") or ""), Text(up, style="green" if b["servers_up"] else "bold red"),
                  str(b["active"]), f"{b['req_per_s']:.1f}", _pct(b["error_rate"]), _ms(b.get("latency"), "p50_ms"),
                  _ms(b.get("latency")), _ms(b.get("latency"), "p99_ms"), f"{b['requests']:,}",
                  str(b["no_server"]))
    return t


def status_view(s: dict[str, Any]) -> Group:
    r = s["rates"]
    head = Text.assemble(
        ("pyvs ", "bold"), (s["version"], "bold"),
        f"  up {s['uptime']:.0f} s  generation {s['generation']}  reloads {s['reloads']}  "
        f"workers {sum(1 for w in s['workers'] if w.get('ready'))}/{len(s['workers'])}\n",
        f"{r['req_per_s']:.1f} req/s  {r['errors_per_s']:.1f} 5xx/s  error rate {_pct(r['error_rate'])}  "
        f"requests {s['totals'].get('requests', 0):,}  client connections {s['totals'].get('client_connections', 0):,}",
    )
    parts: list[Any] = [head]
    for v in s.get("vrrp") or []:
        parts.append(Text(f"vrrp {v.get('name')}: {v.get('state')} (priority {v.get('priority')})"))
    t = Table(title="listeners", title_justify="left")
    for col in ("listener", "mode", "bind", "backends", "req/s", "errors", "p50", "p95", "p99"):
        t.add_column(col, justify="right" if col in ("req/s", "errors", "p50", "p95", "p99") else "left")
    for x in s["listeners"]:
        t.add_row(x["name"], x["mode"], ", ".join(x["bind"]), ", ".join(x["backends"]),
                  f"{x.get('req_per_s', 0):.1f}", _pct(x.get("error_rate", 0)), _ms(x.get("latency"), "p50_ms"),
                  _ms(x.get("latency")), _ms(x.get("latency"), "p99_ms"))
    parts += [t, backends_table(s["backends"])]
    return Group(*parts)

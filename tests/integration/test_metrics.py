"""/metrics end to end: well-formed exposition, and numbers that match the traffic sent
(two workers, two servers, errors, health checks, the access-log counters)."""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from pathlib import Path

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by name and label set, and each family's TYPE; fails on anything malformed."""
    samples: Samples = defaultdict(dict)
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
        else:
            m = _SAMPLE.fullmatch(line)
            assert m is not None, f"malformed sample line: {line!r}"
            name, labels, value = m.groups()
            key = frozenset(_LABEL.findall(labels or ""))
            assert key not in samples[name], f"duplicate sample {line!r}"
            samples[name][key] = float(value)
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample {name} has no TYPE"
    assert set(types) <= helped
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_bytes")), name
    return samples, types


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return str(r.read().decode())


def test_metrics_follow_the_traffic(loop_thread: LoopThread, tmp_path: Path) -> None:
    a, b = Backend(loop_thread, "a"), Backend(loop_thread, "b")
    port = free_port()
    cfg = {
        "global": {"access_log": {"path": str(tmp_path / "access.json"), "flush": "50ms"}},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "routes": [
            {"match": {"path_prefix": "/local"}, "respond": {"status": 404, "body": "no"}},
            {"backend": "pool"},
        ]}],
        "backends": [{
            "name": "pool",
            "health": {"type": "http", "path": "/name", "interval": "200ms", "timeout": "1s"},
            "servers": [{"name": "a", "address": a.address}, {"name": "b", "address": b.address}],
        }],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    try:
        base = f"http://127.0.0.1:{port}"
        out = curl(*[x for i in range(40) for x in ("-o", "/dev/null", f"{base}/n{i}")])
        assert out.returncode == 0
        for _ in range(2):
            assert curl("-o", "/dev/null", f"{base}/status/503").returncode == 0
        assert curl("-o", "/dev/null", f"{base}/local").returncode == 0
        pyvs.wait_status(lambda s: s["totals"]["requests"] == 43 and s["totals"]["access_log_lines"] == 43
                         and all((sv.get("health") or {}).get("last_check") for sv in s["backends"][0]["servers"]))
        text = _get(pyvs.admin_port, "/metrics")
        samples, types = parse(text)

        web = frozenset({("listener", "web")})

        def code(labels: frozenset[tuple[str, str]], c: str) -> frozenset[tuple[str, str]]:
            return labels | {("code", c)}

        lr = samples["pyvs_listener_responses_total"]
        assert lr[code(web, "2xx")] == 40 and lr[code(web, "5xx")] == 2 and lr[code(web, "4xx")] == 1
        assert samples["pyvs_listener_request_duration_seconds_count"][web] == 43
        assert samples["pyvs_listener_response_bytes_total"][web] > 0
        assert types["pyvs_listener_request_duration_seconds"] == "histogram"
        buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples["pyvs_listener_request_duration_seconds_bucket"]
                          .items()), key=lambda kv: kv[0])
        assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), 43)

        per_server = {dict(k)["server"]: v for k, v in samples["pyvs_server_request_duration_seconds_count"].items()}
        assert per_server["a"] + per_server["b"] == 42 and min(per_server.values()) >= 15  # round robin, per worker
        pool = frozenset({("backend", "pool")})
        assert samples["pyvs_backend_request_duration_seconds_count"][pool] == 42
        assert samples["pyvs_backend_retries_total"][pool] == 0 and samples["pyvs_listener_retries_total"][web] == 0
        assert samples["pyvs_backend_responses_total"][code(pool, "5xx")] == 2
        sa = frozenset({("backend", "pool"), ("server", "a")})
        assert samples["pyvs_server_state"][sa | {("state", "UP")}] == 1
        assert samples["pyvs_server_check_success"][sa] == 1
        assert 0 <= samples["pyvs_server_check_duration_seconds"][sa] < 1
        assert samples["pyvs_server_checks_total"][sa] >= 1
        assert samples["pyvs_server_active"][sa] == 0
        assert 0 < samples["pyvs_backend_connection_reuse_ratio"][pool] <= 1
        assert samples["pyvs_access_log_lines_total"][frozenset()] == 43
        assert samples["pyvs_access_log_dropped_total"][frozenset()] == 0
        assert samples["pyvs_requests_total"][frozenset()] == 43
        assert samples["pyvs_workers"][frozenset()] == 2
    finally:
        pyvs.stop()
        a.close()
        b.close()


def test_grafana_dashboard_queries_only_metrics_pyvs_exports() -> None:
    import json

    from pyvs.admin.metrics import render

    root = Path(__file__).resolve().parents[2]
    dash = json.loads((root / "docs" / "grafana" / "pyvs.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bpyvs_[a-z0-9_]+", e)}
    status = {
        "totals": {"requests": 1, "reuse_ratio": 1.0}, "workers": [{"pid": 1, "connections": 0}],
        "traffic": {"listeners": {"web": [0.0] * 30}, "backends": {"b": [0.0] * 30},
                    "servers": [["b", "s", [0.0] * 30]]},
        "backends": [{"name": "b", "servers": [{"name": "s", "state": "UP"}]}],
        "pageviews": {"vhosts": {"web": {"pv_last_minute": 1, "uv_hour": 1, "uv_day": 1}}},
    }
    vrrp = "# TYPE pyvs_vrrp_state gauge\n# TYPE pyvs_vrrp_transitions_total counter\n"  # from pyvs/ha/runner.py
    exported = set(re.findall(r"^# TYPE (\S+)", render(status, vrrp), re.M))
    assert used - exported == set()

"""bench/run.py http-log: every proxy writes a line per request to a file, and pyvs's
config is one `pyvs check` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.run as bench
from pyvs.config.loader import load_text
from pyvs.config.log_schema import AccessLogConfig


@pytest.fixture()
def ws() -> object:
    w = bench.Workspace()
    yield w
    w.close()


def test_http_log_scenario_configs(ws: bench.Workspace) -> None:
    assert "http-log" in bench.SCENARIOS
    assert set(bench.SCENARIOS["http-log"].proxies) == {"haproxy", "nginx", "pyvs"}
    listen, server = bench.Endpoint("127.0.0.1", 1), bench.Endpoint("127.0.0.1", 2)
    backend = bench.Backend(server, None)  # type: ignore[arg-type]
    bench.log_pyvs(ws, listen, backend)
    cfg = load_text(Path(ws.dir, "pyvs", "pyvs.yaml").read_text())
    alog = cfg.listeners[0].access_log
    assert isinstance(alog, AccessLogConfig) and alog.format == "ecs" and alog.path.endswith("access.json")
    bench.log_haproxy(ws, listen, backend)
    text = Path(ws.dir, "haproxy", "haproxy.cfg").read_text()
    assert "option httplog" in text and "log stdout format raw" in text and "log global" in text
    bench.log_nginx(ws, listen, backend)
    assert "access_log " in Path(ws.dir, "proxy-nginx", "nginx.conf").read_text().split("server {")[1]


def test_report_verdict() -> None:
    row = bench.Summary("pyvs", 3, 0, 1.0, None, None, 1.0, 0.9, 1.0)
    assert bench.log_report([row])[-1].endswith("0.90 (target >= 0.85): PASS")
    row.ratio = 0.8
    assert bench.log_report([row])[-1].endswith("FAIL")

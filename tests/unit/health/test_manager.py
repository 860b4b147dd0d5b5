"""Health manager as data: check results in, worker messages out (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyvs.balance.capacity import parse_agent_reply
from pyvs.balance.slowstart import WEIGHT_SCALE
from pyvs.config.health_schema import PassiveHealth
from pyvs.config.loader import load_text
from pyvs.health.checks import CheckResult
from pyvs.health.manager import HealthManager
from pyvs.health.outlier import Ejector

CFG = """
backends:
  - name: b
    slowstart: 10s
    health: {type: http, rise: 2, fall: 2}
    passive: {consecutive_errors: 3, base_ejection: 10s, max_ejection: 25s, max_ejected_percent: 50}
    servers:
      - {name: s1, address: "127.0.0.1:1", weight: 2}
      - {name: s2, address: "127.0.0.1:2"}
      - {name: s3, address: "127.0.0.1:3"}
"""


def manager() -> tuple[HealthManager, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    return HealthManager(load_text(CFG), sent.append, seed=1), sent


def ok(flag: bool, agent: str | None = None) -> CheckResult:
    return CheckResult(flag, "x", 0.001, parse_agent_reply(agent) if agent else None)


def test_down_and_up_are_broadcast_once_each() -> None:
    m, sent = manager()
    e = m.entries[("b", "s2")]
    m.on_result(e, ok(True))
    assert sent == []  # nothing changed
    m.on_result(e, ok(False))
    assert sent == []  # fall = 2
    m.on_result(e, ok(False))
    assert sent == [{"type": "server", "backend": "b", "server": "s2", "eligible": False, "weight": WEIGHT_SCALE}]
    m.on_result(e, ok(False))
    assert len(sent) == 1
    assert m.snapshot() == sent


def test_agent_percentage_scales_the_weight() -> None:
    m, sent = manager()
    e = m.entries[("b", "s1")]
    m.on_result(e, ok(True, "50%"))
    assert sent[-1]["weight"] == 2 * WEIGHT_SCALE // 2 and sent[-1]["eligible"]
    m.on_result(e, ok(True, "drain"))
    # HAProxy's drain: no new sessions (weight 0), stuck sessions still served (eligible).
    assert sent[-1]["weight"] == 0 and sent[-1]["eligible"] is True
    m.on_result(e, ok(True, "maint"))
    assert sent[-1]["eligible"] is False


def test_slow_start_ramps_the_weight_after_coming_back() -> None:
    m, _ = manager()
    e = m.entries[("b", "s1")]
    m.on_result(e, ok(False))
    m.on_result(e, ok(True))
    m.on_result(e, ok(True))
    assert e.ramp_since is not None
    full = 2 * WEIGHT_SCALE
    since = e.ramp_since
    weights = [e.weight(since + t) for t in (0.0, 2.5, 5.0, 9.99, 10.0)]
    assert weights[0] >= 1 and weights == sorted(weights) and weights[-1] == full and weights[2] < full


def test_ejector_limits_and_growing_durations() -> None:
    ej = Ejector(PassiveHealth(base_ejection=10, max_ejection=25, max_ejected_percent=50), servers=3)
    assert ej.limit() == 1
    assert ej.eject("s1", 0.0) == 10.0
    assert ej.eject("s2", 0.0) is None  # 1 of 3 already out
    assert ej.expire(9.9) == [] and ej.expire(10.0) == ["s1"]
    assert ej.eject("s1", 20.0) == 40.0  # second ejection: twice as long
    ej.expire(40.0)
    assert ej.eject("s1", 50.0) == 75.0  # third: capped at 25 s


@pytest.mark.asyncio
async def test_outlier_report_ejects_and_expires() -> None:
    m, sent = manager()
    m._loop = asyncio.get_running_loop()
    m.ejectors["b"].cfg = PassiveHealth(base_ejection=0.05, max_ejected_percent=50)
    m.on_outlier("b", "s3", "5xx")
    assert sent[-1]["server"] == "s3" and sent[-1]["eligible"] is False
    m.on_outlier("b", "s2", "5xx")  # limit: one of three
    assert sent[-1]["server"] == "s3"
    for _ in range(100):
        if sent[-1]["eligible"]:
            break
        await asyncio.sleep(0.01)
    # Back in service through slow start: a small weight first.
    assert sent[-1]["server"] == "s3" and sent[-1]["eligible"] and 1 <= sent[-1]["weight"] < WEIGHT_SCALE


def test_http_checks_speak_http2_only_to_the_servers_own_port() -> None:
    """An h2 server's check on a port of its own (a plain HTTP health endpoint beside a
    gRPC port) speaks HTTP/1.1 there; on the server's port, HTTP/2."""
    cfg = load_text("""
backends:
  - name: g
    servers:
      - {name: own, address: "127.0.0.1:50051", proto: h2c, health: {type: http}}
      - {name: side, address: "127.0.0.1:50052", proto: h2c, health: {type: http, port: 8081}}
      - {name: same, address: "127.0.0.1:50053", proto: h2c, health: {type: http, port: 50053}}
""")
    hm = HealthManager(cfg, lambda msg: None, seed=1)
    assert {s: hm.entries[("g", s)].target.proto for s in ("own", "side", "same")} == {
        "own": "h2c", "side": "http1", "same": "h2c"}

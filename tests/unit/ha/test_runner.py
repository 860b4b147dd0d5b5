"""The runner's status and metrics before start (no sockets: nothing here needs root)."""

from __future__ import annotations

from pyvs.config.loader import load_text
from pyvs.ha.packet import Drop
from pyvs.ha.runner import COUNTERS, VrrpRunner

CFG = """
vrrp:
  - {name: VI_1, interface: eth0, vrid: 51, priority: 150, virtual_ips: [10.0.0.100/24]}
  - {name: VI_2, interface: eth0, vrid: 52, version: 2, virtual_ips: [10.0.0.101/24]}
"""


def test_counters_cover_every_drop_reason() -> None:
    assert {f"drop_{d.value}" for d in Drop} <= set(COUNTERS)
    assert len(set(COUNTERS)) == len(COUNTERS)


def test_status_before_start() -> None:
    runner = VrrpRunner(load_text(CFG))
    first, second = runner.status()
    assert first["name"] == "VI_1" and first["state"] == "INIT" and first["priority"] == 150
    assert second["version"] == 2 and second["virtual_ips"] == ["10.0.0.101/24"]
    assert first["tracking"] == [{"kind": "interface", "name": "eth0", "weight": 0, "ok": True}]
    assert set(first["counters"]) == {*COUNTERS, "notify_runs", "notify_failures"}
    assert all(v == 0 for v in first["counters"].values())


def test_metrics_text() -> None:
    text = VrrpRunner(load_text(CFG)).metrics()
    assert 'pyvs_vrrp_state{instance="VI_1",state="INIT"} 1' in text
    assert 'pyvs_vrrp_state{instance="VI_1",state="MASTER"} 0' in text
    assert 'pyvs_vrrp_priority{instance="VI_2"} 100' in text
    assert 'pyvs_vrrp_adverts_sent_total{instance="VI_2"} 0' in text
    assert "# TYPE pyvs_vrrp_drop_checksum_total counter" in text

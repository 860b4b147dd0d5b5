"""The nftables data plane in a real topology (root, network namespaces).

A client namespace connects to the VIP on the balancer namespace; the kernel, as
programmed by pyvs, DNATs each new connection to one of two server namespaces and
masquerades it. Checked here: connections from the client spread across both servers
(round robin, weights, source hashing, UDP), a server taken out by a health change
disappears from the map at once, the counters come back, and pyvs's exit removes its
own table and nothing else. Topology: :mod:`tests.netns.l4_topology`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvs.l4.nftables import KernelServer, NftDataPlane, NftPlan, NftRunner
from tests.netns.l4_topology import CLIENT_IPS, PORT, REPO, SERVER_IPS, VIP, L4Lab, wait_for

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab() -> Iterator[L4Lab]:
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root (ip netns, nftables)")
    lab = L4Lab()
    yield lab
    lab.close()


def l4_config(mode: str = "tcp", balance: str = "roundrobin", weights: tuple[int, int] = (1, 1),
              **listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "mode": mode, "bind": [f"{VIP}:80"], "backend": "be",
                       "dataplane": "nftables", **listener}],
        "backends": [{"name": "be", "balance": balance, "servers": [
            {"name": name, "address": f"{ip}:{PORT}", "weight": w}
            for (name, ip), w in zip(SERVER_IPS.items(), weights, strict=True)
        ]}],
    }


def run_pyvs(lab: L4Lab, cfg: dict[str, Any], tmp: Path, table: str = "ip pyvs_web") -> subprocess.Popen[bytes]:
    proc = lab.pyvs(cfg, tmp)
    log = tmp / "pyvs-l4-netns.log"
    # The table, and the end of the start: the table is in before the workers are ready,
    # and a SIGHUP before that is ignored ("ignored while pyvs is starting").
    wait_for(lambda: (table in lab.tables() and " running from " in log.read_text()) or proc.poll() is not None,
             20, f"table {table} and the start")
    assert proc.poll() is None, log.read_text()
    return proc


def stop_pyvs(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def answers(results: list[tuple[str, str]]) -> Counter[str]:
    return Counter(ans for _, ans in results)


def test_round_robin_across_both_servers_and_exit_removes_only_our_table(lab: L4Lab, tmp_path: Path) -> None:
    lab.ns(lab.lb, "nft", "add", "table", "ip", "someone_else")
    try:
        proc = run_pyvs(lab, l4_config(), tmp_path)
        assert answers(lab.clients(20)) == {"s1": 10, "s2": 10}
        # the servers saw the balancer (masquerade), the client still reached the VIP
        assert stop_pyvs(proc) == 0
        tables = lab.tables()
        assert "ip pyvs_web" not in tables
        assert "ip someone_else" in tables
        assert all(a.startswith("error") for _, a in lab.clients(2))  # nothing listens on the VIP itself
    finally:
        lab.ns(lab.lb, "nft", "delete", "table", "ip", "someone_else", check=False)


def test_weights_and_udp(lab: L4Lab, tmp_path: Path) -> None:
    proc = run_pyvs(lab, l4_config(mode="udp", weights=(3, 1)), tmp_path)
    try:
        got = answers(lab.clients(20, proto="udp"))
        assert got == {"s1": 15, "s2": 5}
    finally:
        assert stop_pyvs(proc) == 0


def test_source_hashing_keeps_each_client_address_on_one_server(lab: L4Lab, tmp_path: Path) -> None:
    proc = run_pyvs(lab, l4_config(balance="source"), tmp_path)
    try:
        results = lab.clients(32, sources=CLIENT_IPS)
        by_source: dict[str, set[str]] = {}
        for src, ans in results:
            by_source.setdefault(src, set()).add(ans)
        assert all(len(v) == 1 and not next(iter(v)).startswith("error") for v in by_source.values())
        assert set().union(*by_source.values()) == {"s1", "s2"}
    finally:
        assert stop_pyvs(proc) == 0


def test_health_change_rewrites_the_map_and_counters_come_back(lab: L4Lab) -> None:
    """What the health manager does when s2 fails its check: ``set_servers`` without
    it. The very next connections all go to s1; established state is untouched."""
    plan = NftPlan(table="pyvs_health", protocol="tcp", vips=((VIP, 80),),
                   servers=tuple(KernelServer(n, ip, PORT) for n, ip in SERVER_IPS.items()), algorithm="inc")
    plane = NftDataPlane("web", "be", plan, NftRunner(["ip", "netns", "exec", lab.lb]))
    plane.start()
    try:
        assert answers(lab.clients(4)) == {"s1": 2, "s2": 2}
        plane.set_servers({"s1": 1})  # s2 is DOWN
        assert answers(lab.clients(6)) == {"s1": 6}
        plane.set_servers({})  # nothing eligible: connections are refused at once
        assert answers(lab.clients(2)) == {"error: ConnectionRefusedError": 2}
        plane.set_servers({"s1": 1, "s2": 1})  # s2 is back
        assert answers(lab.clients(4)) == {"s1": 2, "s2": 2}
        st = plane.statistics()
        conns = {s["name"]: s["connections"] for s in st["servers"]}
        assert conns == {"s1": 10, "s2": 4}
        assert st["no_server"] == 2
        assert all(s["bytes_from_server"] > 0 and s["bytes_to_server"] > 0 for s in st["servers"])
    finally:
        plane.stop()
    assert "ip pyvs_health" not in lab.tables()


def test_a_dead_server_without_health_checks_stays_in_the_map(lab: L4Lab) -> None:
    """The control for the test above: the kernel itself never skips a server."""
    plan = NftPlan(table="pyvs_dead", protocol="tcp", vips=((VIP, 80),),
                   servers=tuple(KernelServer(n, ip, PORT) for n, ip in SERVER_IPS.items()), algorithm="inc")
    plane = NftDataPlane("web", "be", plan, NftRunner(["ip", "netns", "exec", lab.lb]))
    plane.start()
    lab.stop_server("s2")
    try:
        got = answers(lab.clients(4))
        assert got["s1"] == 2 and got["error: ConnectionRefusedError"] == 2
    finally:
        lab.start_server("s2")
        plane.stop()


def test_pyvs_check_reports_missing_ipvs_clearly(tmp_path: Path) -> None:
    cfg = l4_config()
    cfg["listeners"][0].update(dataplane="ipvs", kernel={"masquerade": False})
    path = tmp_path / "ipvs.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-m", "pyvs.cli", "check", "-c", str(path)], capture_output=True,
                         text=True, cwd=REPO, timeout=30)
    if out.returncode == 0:  # the probe loaded ip_vs, so the kernel lists it now
        assert Path("/proc/net/ip_vs").exists(), "pyvs check accepted ipvs on a kernel without it"
    else:
        assert "listeners[0].dataplane: this kernel has no IPVS" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_a_server_failing_its_health_check_leaves_the_kernel_map(lab: L4Lab, tmp_path: Path) -> None:
    """End to end: pyvs's own health check takes s2 out of the nftables map within the
    check interval, and puts it back when it answers again."""
    cfg = l4_config()
    cfg["backends"][0]["health"] = {"type": "tcp", "interval": "100ms", "timeout": "200ms", "rise": 1, "fall": 1}
    proc = run_pyvs(lab, cfg, tmp_path)
    try:
        assert answers(lab.clients(4)) == {"s1": 2, "s2": 2}
        lab.stop_server("s2")
        wait_for(lambda: answers(lab.clients(2)) == {"s1": 2}, 5, "s2 out of the map")
        assert answers(lab.clients(6)) == {"s1": 6}
        lab.start_server("s2")
        wait_for(lambda: "s2" in answers(lab.clients(4)), 5, "s2 back in the map")
    finally:
        if "s2" not in lab.procs:
            lab.start_server("s2")
        assert stop_pyvs(proc) == 0


def test_reload_replaces_the_table_atomically(lab: L4Lab, tmp_path: Path) -> None:
    """SIGHUP with new weights: the table is replaced in one nft transaction. Clients
    running through the reload never find the VIP unanswered; afterwards the new
    weights hold."""
    import threading

    cfg = l4_config(weights=(1, 1))
    proc = run_pyvs(lab, cfg, tmp_path)
    try:
        assert answers(lab.clients(20)) == {"s1": 10, "s2": 10}
        during: list[tuple[str, str]] = []
        t = threading.Thread(target=lambda: during.extend(lab.clients(60)))
        t.start()
        cfg["backends"][0]["servers"][0]["weight"] = 3
        (tmp_path / "pyvs-l4-netns.yaml").write_text(json.dumps(cfg))
        proc.send_signal(signal.SIGHUP)
        log = tmp_path / "pyvs-l4-netns.log"
        wait_for(lambda: "table pyvs_web replaced" in log.read_text(), 20, "the table replaced")
        t.join(60)
        assert during and all(a in ("s1", "s2") for _, a in during), during
        assert answers(lab.clients(20)) == {"s1": 15, "s2": 5}
        assert lab.tables().count("ip pyvs_web") == 1
    finally:
        assert stop_pyvs(proc) == 0
    assert "ip pyvs_web" not in lab.tables()

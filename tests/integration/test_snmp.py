"""SNMP end to end: a real net-snmp ``snmpd`` (AgentX master, started by the test on a
private UDP port and socket), ``pyvs ctl snmp-agent`` as its subagent, a real pyvs, and
``snmpwalk`` / ``snmpbulkwalk`` / ``snmpget`` / ``snmpset`` as the clients.

The standard MIB modules (SNMPv2-SMI...) are not installable from Debian's main archive,
so the tools run with numeric OIDs (``-On``, no MIB loaded); PYVS-MIB itself is checked
against what the subagent serves in tests/unit/admin/test_agentx.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, Backend, LoopThread, Pyvs, curl, free_port

PYVS = ".1.3.6.1.4.1.32473.1"


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snmp(tool: str, port: int, *args: str, community: str = "public") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}
    return subprocess.run([tool, "-v2c", "-c", community, "-On", "-t", "2", "-r", "2", f"udp:127.0.0.1:{port}",
                           *args], capture_output=True, text=True, timeout=60, env=env)


def walk(port: int, tool: str = "snmpwalk") -> dict[str, str]:
    r = snmp(tool, port, PYVS)
    out = {}
    for line in r.stdout.splitlines():
        oid, _, value = line.partition(" = ")
        out[oid] = value
    return out


@pytest.fixture(scope="module")
def env(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for tool in ("snmpd", "snmpwalk"):
        assert shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"), \
            f"{tool} is missing: `make deps` installs snmpd and snmp (APT_TEST)"
    tmp = tmp_path_factory.mktemp("snmp")
    sock = tmp / "agentx.sock"
    port = free_udp_port()
    conf = tmp / "snmpd.conf"
    conf.write_text(f"master agentx\nagentXSocket unix:{sock}\nrocommunity public 127.0.0.1\n"
                    f"rwcommunity private 127.0.0.1\npersistentDir {tmp}/persist\n")
    snmpd_log = (tmp / "snmpd.log").open("wb")
    snmpd = subprocess.Popen(
        [shutil.which("snmpd") or "/usr/sbin/snmpd", "-f", "-Lo", "-C", "-c", str(conf), "-p", str(tmp / "snmpd.pid"),
         f"udp:127.0.0.1:{port}"],
        stdout=snmpd_log, stderr=subprocess.STDOUT,
        env={**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent", "SNMP_PERSISTENT_DIR": str(tmp / "persist")})
    a, b = Backend(loop_thread, "a"), Backend(loop_thread, "b")
    web = free_port()
    pyvs = Pyvs({"listeners": [{"name": "web", "bind": [f"127.0.0.1:{web}"], "backend": "app"}],
                 "backends": [{"name": "app", "servers": [{"name": "a", "address": a.address},
                                                           {"name": "b", "address": b.address}]}]},
                tmp, workers=2)
    agent: subprocess.Popen[bytes] | None = None
    agent_log = (tmp / "agent.log").open("wb")
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert snmpd.poll() is None, (tmp / "snmpd.log").read_text()
            assert time.monotonic() < deadline, "snmpd did not open its AgentX socket"
            time.sleep(0.05)
        agent = subprocess.Popen(
            [sys.executable, "-m", "pyvs.cli", "ctl", "--admin", f"http://127.0.0.1:{pyvs.admin_port}",
             "snmp-agent", "--agentx", f"unix:{sock}", "--interval", "0.2"],
            cwd=ROOT, stdout=agent_log, stderr=subprocess.STDOUT)
        yield {"port": port, "pyvs": pyvs, "web": web, "agent": agent, "tmp": tmp}
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(20)
        pyvs.stop()
        snmpd.terminate()
        snmpd.wait(20)
        for x in (a, b):
            x.close()
        snmpd_log.close()
        agent_log.close()


def wait_walk(port: int, pred: Any, what: str) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while True:
        w = walk(port)
        if pred(w):
            return w
        assert time.monotonic() < deadline, f"snmpwalk never showed {what}: {w}"
        time.sleep(0.2)


def test_snmpwalk_sees_pyvs(env: dict[str, Any]) -> None:
    port = env["port"]
    w = wait_walk(port, lambda w: w.get(f"{PYVS}.1.1.0") == "INTEGER: 1", "pyvsUp")
    assert w[f"{PYVS}.1.2.0"].startswith("STRING:")
    assert w[f"{PYVS}.2.1.2.1"] == 'STRING: "app"'
    assert w[f"{PYVS}.3.1.2.1.1"] == 'STRING: "a"' and w[f"{PYVS}.3.1.2.1.2"] == 'STRING: "b"'
    assert w[f"{PYVS}.3.1.4.1.1"] == "INTEGER: 1"  # up
    assert w[f"{PYVS}.1.7.0"].startswith("Counter64:")


def test_counters_move_and_state_follows_a_drain(env: dict[str, Any]) -> None:
    port, pyvs, web = env["port"], env["pyvs"], env["web"]
    assert curl(*[f"http://127.0.0.1:{web}/"] * 20).returncode == 0
    wait_walk(port, lambda w: int(w.get(f"{PYVS}.1.7.0", "Counter64: 0").split()[-1]) >= 20, "20 requests")
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{pyvs.admin_port}/backends/app/servers/b/drain", method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
        assert resp.status == 200
    wait_walk(port, lambda w: w.get(f"{PYVS}.3.1.4.1.2") == "INTEGER: 3", "server b in drain(3)")


def test_getbulk_and_get(env: dict[str, Any]) -> None:
    port = env["port"]
    plain = wait_walk(port, lambda w: f"{PYVS}.3.1.2.1.1" in w, "the server table")
    bulk = walk(port, "snmpbulkwalk")
    assert list(bulk) == list(plain)  # same OIDs, same order (values may have moved)
    r = snmp("snmpget", port, f"{PYVS}.2.1.2.1", f"{PYVS}.9.9.0")
    assert 'STRING: "app"' in r.stdout and "No Such Object" in r.stdout


def test_set_is_refused(env: dict[str, Any]) -> None:
    """Even with a read-write community, the subagent answers notWritable."""
    r = snmp("snmpset", env["port"], f"{PYVS}.2.1.2.1", "s", "x", community="private")
    assert r.returncode != 0 and "notWritable" in (r.stdout + r.stderr)


def test_pyvs_gone_means_unreachable(env: dict[str, Any]) -> None:
    """Last (it stops pyvs): the subagent keeps answering, with pyvsUp = unreachable(2)."""
    port, pyvs = env["port"], env["pyvs"]
    pyvs.stop()
    wait_walk(port, lambda w: w.get(f"{PYVS}.1.1.0") == "INTEGER: 2", "pyvsUp unreachable")
    assert env["agent"].poll() is None


def test_the_subagent_log(env: dict[str, Any]) -> None:
    text = Path(env["tmp"] / "agent.log").read_text()
    assert "serving 1.3.6.1.4.1.32473.1 through the AgentX master" in text

"""End to end: ``pyvs run`` with VRRP in the supervisor, an HTTP client on the VIP.

Two nodes run the whole of pyvs (supervisor, a worker, a demo backend, VRRP) from
one config file; a client in a third namespace keeps requesting
``http://10.77.0.100:8080/`` while the master's whole process group is killed. The
client must keep getting answers -- from the other node once the VIP has moved -- and
every failure must fall inside the failover window. The client never waits for an
ARP entry to expire: the new master's gratuitous ARP moves it.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.netns.conftest import Lab, Node, holds, wait_for

pytestmark = pytest.mark.netns

VIP = "10.77.0.100"
INTERVAL = 0.1

CLIENT = """
import http.client, json, sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t = time.monotonic()
    try:
        conn = http.client.HTTPConnection("10.77.0.100", 8080, timeout=0.3)
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        print(json.dumps({"t": t, "ok": resp.status == 200, "server": body.get("server")}), flush=True)
        conn.close()
    except Exception as exc:
        print(json.dumps({"t": t, "ok": False, "error": type(exc).__name__}), flush=True)
        time.sleep(0.01)
"""


def node_config(name: str, priority: int) -> str:
    return f"""
global: {{workers: 1, log_level: info}}
admin: {{listen: "127.0.0.1:9090"}}
demo:
  servers: [{{name: {name}, listen: "127.0.0.1:9001"}}]
listeners:
  - {{name: web, bind: ["0.0.0.0:8080"], backend: demo}}
backends:
  - name: demo
    servers: [{{name: {name}, address: "127.0.0.1:9001"}}]
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    priority: {priority}
    advert_interval: 100ms
    virtual_ips: [{VIP}/24]
    garp_interval: 100ms
    track:
      listeners: [{{name: web, weight: -150}}]
      interval: 200ms
"""


def status(node: Node) -> dict[str, object]:
    out = node.exec("curl", "-s", "-m", "1", "http://127.0.0.1:9090/status").stdout
    return json.loads(out) if out else {}


def vrrp_state(node: Node) -> str | None:
    st = status(node).get("vrrp")
    return st[0]["state"] if isinstance(st, list) and st else None


def served_for(log: str, server: str) -> float:
    """Seconds since the client's first answer from ``server`` (0 before it)."""
    for line in log.splitlines():
        if line.startswith("{") and f'"{server}"' in line:
            return time.monotonic() - float(json.loads(line)["t"])
    return 0.0


def test_http_through_the_vip_survives_killing_the_master(lab: Lab) -> None:
    a, b, c = lab.node("a", 1), lab.node("b", 2), lab.node("c", 3)
    pa = a.pyvs(node_config("node-a", 200), command="run")
    b.pyvs(node_config("node-b", 100), command="run")
    wait_for(lambda: lab.holders(VIP) == ["a"], 15, "a to hold the VIP")
    wait_for(lambda: vrrp_state(b) == "BACKUP", 5, "b's /status to show BACKUP")
    st = status(a)["vrrp"]
    assert isinstance(st, list)
    assert st[0]["state"] == "MASTER" and st[0]["priority"] == 200 and st[0]["counters"]["adverts_sent"] > 0

    client = c.run("python3", "-c", CLIENT, "4", name="client")
    # Steady traffic through a first (the client stamps with the same monotonic clock):
    # what is measured is the gap the kill makes in it.
    wait_for(lambda: served_for(client.text(), "node-a") >= 0.6, 4, "the client to get answers from a for 0.6s")
    killed = time.monotonic()
    pa.kill(signal.SIGKILL)  # supervisor, worker and demo backend at once
    assert client.popen.wait(10) == 0

    results = [json.loads(line) for line in client.text().splitlines() if line.startswith("{")]
    in_flight = 0.3  # a request started this long before the kill may still be cut by it
    before = [r for r in results if r["t"] < killed - in_flight]
    failures = [r for r in results if not r["ok"]]
    from_b = [r for r in results if r["ok"] and r["server"] == "node-b"]
    assert before and all(r["ok"] and r["server"] == "node-a" for r in before)
    assert from_b, "no answer from b after the failover"
    first_b = from_b[0]["t"] - killed
    bound = 3 * INTERVAL + (256 - 100) * INTERVAL / 256 + 0.5
    late = [r for r in failures if not killed - in_flight <= r["t"] <= killed + bound]
    print(
        f"\nHTTP through the VIP: {len(before)} answers before the kill, {len(failures)} failed requests "
        f"({', '.join(sorted({r.get('error', '?') for r in failures}))}), {len(from_b)} answers from b; "
        f"first answer from b {first_b:.3f}s after the kill (bound {bound:.3f}s)"
    )
    assert first_b <= bound
    assert not late, f"failures outside the failover window: {late[:3]}"
    assert all(r["server"] == "node-b" for r in results if r["ok"] and r["t"] > killed)
    wait_for(lambda: vrrp_state(b) == "MASTER", 2, "b's /status to show MASTER")


def test_data_path_tracking_hands_over_when_the_listener_dies(lab: Lab) -> None:
    """A frozen worker (SIGSTOP) still completes TCP handshakes in the kernel but answers
    nothing: the listener probe fails, a's priority drops below b's and b takes over."""
    a, b = lab.node("a", 1), lab.node("b", 2)
    a.pyvs(node_config("node-a", 200), command="run")
    b.pyvs(node_config("node-b", 100), command="run")
    wait_for(lambda: lab.holders(VIP) == ["a"], 15, "a to hold the VIP")
    workers = [w["pid"] for w in status(a)["workers"]]  # type: ignore[union-attr]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: lab.holders(VIP) == ["b"], 5, "b to take over from a's frozen data path")
        st = status(a)["vrrp"]
        assert isinstance(st, list) and st[0]["state"] == "BACKUP" and st[0]["priority"] == 50
        listener = [t for t in st[0]["tracking"] if t["kind"] == "listener"]
        assert listener == [{"kind": "listener", "name": "web", "weight": -150, "ok": False}]
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: lab.holders(VIP) == ["a"], 5, "a to preempt once its data path answers again")
    holds(lambda: lab.holders(VIP) == ["a"], 0.3, "the VIP on a alone")

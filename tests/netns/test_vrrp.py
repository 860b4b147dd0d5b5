"""pyvs VRRP between network namespaces: election, failover, preemption, split brain.

Each test builds its own lab (see conftest.py) and runs ``pyvs vrrp -c FILE`` in
the node namespaces. "Holding the VIP" is read from the kernel (``ip addr``), never
from pyvs's own claims. Failover bounds are the RFC's: a backup takes over within
master-down = 3 x interval + skew of the master's last advert; 0.5 s is added for
process and polling latency.
"""

from __future__ import annotations

import signal

import pytest

from tests.netns.conftest import Lab, config, holds, vrrp_yaml, wait_for

pytestmark = pytest.mark.netns

VIP = "10.77.0.100"


def master_down(interval: float, priority: int) -> float:
    return 3 * interval + (256 - priority) * interval / 256


def only(lab: Lab, name: str) -> bool:
    return lab.holders(VIP) == [name]


def test_election_by_priority_leaves_the_vip_on_exactly_one_node(lab: Lab) -> None:
    a, b, c = lab.node("a", 1), lab.node("b", 2), lab.node("c", 3)
    for node, prio in ((a, 100), (b, 200), (c, 150)):
        node.pyvs(config(vrrp_yaml(priority=prio)))
    wait_for(lambda: only(lab, "b"), 5, "b (priority 200) to hold the VIP alone")
    holds(lambda: only(lab, "b"), 1.0, "the VIP on b alone")


@pytest.mark.parametrize("interval", [1.0, 0.1], ids=["1s", "100ms"])
def test_failover_when_the_master_is_killed(lab: Lab, interval: float) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    spec = "1s" if interval == 1.0 else "100ms"
    pa = a.pyvs(config(vrrp_yaml(priority=200, interval=spec)))
    b.pyvs(config(vrrp_yaml(priority=100, interval=spec)))
    wait_for(lambda: only(lab, "a"), 4 * interval + 3, "a to be master")
    holds(lambda: only(lab, "a"), 2 * interval, "the VIP on a alone")

    pa.kill(signal.SIGKILL)  # no goodbye: b must notice the silence
    took = wait_for(lambda: b.has(VIP), master_down(interval, 100) + 2, "b to take the VIP")
    bound = master_down(interval, 100) + 0.5
    print(f"\nfailover after SIGKILL, advert_interval {spec}: {took:.3f}s (bound {bound:.3f}s)")
    assert took <= bound

    # The killed master left its VIP behind; restarted, it removes it first, then preempts.
    a.pyvs(config(vrrp_yaml(priority=200, interval=spec)), name="pyvs-restart")
    wait_for(lambda: only(lab, "a"), master_down(interval, 200) + 2, "the restarted a to take the VIP back")
    holds(lambda: only(lab, "a"), 2 * interval, "the VIP on a alone")


def test_clean_stop_resigns_with_priority_zero(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    pa = a.pyvs(config(vrrp_yaml(priority=200, interval="1s")))
    b.pyvs(config(vrrp_yaml(priority=100, interval="1s")))
    wait_for(lambda: only(lab, "a"), 6, "a to be master")
    pa.kill(signal.SIGTERM)
    took = wait_for(lambda: only(lab, "b"), 2, "b to take over after a's resignation")
    assert pa.popen.wait(5) == 0
    print(f"\nhandover after SIGTERM (priority 0), advert_interval 1s: {took:.3f}s")
    assert took < 1.1  # skew time (0.61 s) and process latency, far below master-down (3.6 s)


def test_preempt_takes_over_and_nopreempt_does_not(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    b.pyvs(config(vrrp_yaml(priority=100)))
    wait_for(lambda: only(lab, "b"), 3, "b alone to become master")

    pa = a.pyvs(config(vrrp_yaml(priority=200)))  # preempt is the default
    wait_for(lambda: only(lab, "a"), 3, "a (higher priority, preempt) to take over")
    pa.stop()
    wait_for(lambda: only(lab, "b"), 2, "b to be master again")

    a.pyvs(config(vrrp_yaml(priority=200, extra="    nopreempt: true")), name="pyvs-nopreempt")
    wait_for(lambda: "BACKUP" in a.procs[-1].text(), 3, "a with nopreempt to start as backup")
    holds(lambda: only(lab, "b"), 1.5, "b staying master while a (nopreempt) waits")


def test_preempt_delay_postpones_the_takeover(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    b.pyvs(config(vrrp_yaml(priority=100)))
    wait_for(lambda: only(lab, "b"), 3, "b alone to become master")
    a.pyvs(config(vrrp_yaml(priority=200, extra="    preempt_delay: 1500ms")))
    holds(lambda: only(lab, "b"), 1.2, "b staying master during a's preempt_delay")
    wait_for(lambda: only(lab, "a"), 2, "a to preempt once the delay is over")


def test_link_cut_makes_two_masters_and_rejoining_leaves_one(lab: Lab) -> None:
    a, b = lab.node("a", 1, bridge="br0"), lab.node("b", 2, bridge="br1")
    a.pyvs(config(vrrp_yaml(priority=200)))
    b.pyvs(config(vrrp_yaml(priority=100)))
    wait_for(lambda: only(lab, "a"), 3, "a to be master")
    lab.cut_isl(True)
    wait_for(lambda: lab.holders(VIP) == ["a", "b"], 2, "both sides to be master (split brain)")
    lab.cut_isl(False)
    wait_for(lambda: only(lab, "a"), 2, "one master after the link is back")
    holds(lambda: only(lab, "a"), 0.5, "the VIP on a alone")


def test_own_link_down_faults_and_the_backup_takes_over(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    log = lab.tmp / "a-notify.log"
    notify = f"sh -c 'echo \"$1 $2 $3\" >> {log}' notify"
    a.pyvs(config(vrrp_yaml(priority=200, notify=notify)))
    b.pyvs(config(vrrp_yaml(priority=100)))
    wait_for(lambda: only(lab, "a"), 3, "a to be master")
    a.link(False)  # a's switch port down: a's eth0 loses carrier
    wait_for(lambda: only(lab, "b"), 2, "b to hold the VIP alone while a is in FAULT")
    a.link(True)
    wait_for(lambda: only(lab, "a"), 3, "a to come back as master")
    lines = log.read_text().splitlines()
    assert lines[:4] == ["VI_1 INIT BACKUP", "VI_1 BACKUP MASTER", "VI_1 MASTER FAULT", "VI_1 FAULT BACKUP"]


def test_failing_track_script_lowers_the_priority(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    flag = lab.tmp / "healthy"
    flag.write_text("")
    track = f"    track:\n      scripts: [{{command: 'test -e {flag}', weight: -150, interval: 100ms}}]"
    a.pyvs(config(vrrp_yaml(priority=200, extra=track)))
    b.pyvs(config(vrrp_yaml(priority=100)))
    wait_for(lambda: only(lab, "a"), 3, "a to be master")
    flag.unlink()  # a's priority drops to 50, below b's 100
    wait_for(lambda: only(lab, "b"), 3, "b to take over from the lowered a")
    flag.write_text("")
    wait_for(lambda: only(lab, "a"), 3, "a to preempt again once the script succeeds")


def test_ipv6_vip_fails_over(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    vip6 = "fd77::100"
    pa = a.pyvs(config(vrrp_yaml(priority=200, vips=(f"{vip6}/64",))))
    b.pyvs(config(vrrp_yaml(priority=100, vips=(f"{vip6}/64",))))
    wait_for(lambda: lab.holders(vip6) == ["a"], 3, "a to hold the IPv6 VIP")
    a.serve_http()
    b.serve_http()
    c = lab.node("c", 3)

    def answer() -> str:
        return c.exec("curl", "-s", "-m", "1", f"http://[{vip6}]:8000/").stdout

    wait_for(lambda: answer() == "a", 3, "a to answer on the IPv6 VIP")
    pa.kill()
    took = wait_for(lambda: b.has(vip6), 2, "b to take the IPv6 VIP")
    assert took <= master_down(0.1, 100) + 0.5
    # The unsolicited neighbour advert moved c's cache entry to b: no waiting for it to expire.
    wait_for(lambda: answer() == "b", 1, "b to answer on the IPv6 VIP")


def test_unicast_peers(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    pa = a.pyvs(config(vrrp_yaml(priority=200, extra="    unicast_peers: [10.77.0.2]")))
    b.pyvs(config(vrrp_yaml(priority=100, extra="    unicast_peers: [10.77.0.1]")))
    wait_for(lambda: only(lab, "a"), 3, "a to be master over unicast")
    holds(lambda: only(lab, "a"), 0.5, "the VIP on a alone")
    pa.kill()
    wait_for(lambda: b.has(VIP), master_down(0.1, 100) + 0.5, "b to take over")


def test_master_master_with_two_instances(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    vip2 = "10.77.0.101"

    def pair(p1: int, p2: int) -> str:
        return config(
            vrrp_yaml(name="VI_1", vrid=51, priority=p1),
            vrrp_yaml(name="VI_2", vrid=52, priority=p2, vips=(f"{vip2}/24",)),
        )

    pa = a.pyvs(pair(200, 100))
    b.pyvs(pair(100, 200))
    wait_for(lambda: lab.holders(VIP) == ["a"] and lab.holders(vip2) == ["b"], 3, "each node master of one VIP")
    holds(lambda: lab.holders(VIP) == ["a"] and lab.holders(vip2) == ["b"], 0.5, "the split of VIPs")
    pa.kill()
    wait_for(lambda: b.has(VIP) and b.has(vip2), 2, "b to hold both VIPs")

"""Interoperability with keepalived (Debian's package): one keepalived node, one pyvs node.

For VRRPv3 (IPv4 and IPv6, multicast and unicast, 100 ms adverts) and VRRPv2 (1 s
adverts, simple password), the two implementations share one VRID and must

1. elect the higher priority (keepalived) and keep the VIP there for longer than the
   pyvs backup's master-down interval -- proof that pyvs accepts keepalived's adverts
   (checksum, pseudo-header, interval, password, address list);
2. fail over to pyvs when keepalived is killed;
3. with keepalived back at a lower priority, keep the VIP on pyvs for longer than
   keepalived's master-down interval -- proof that keepalived accepts pyvs's adverts;
4. fail over to keepalived when pyvs is killed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.netns.conftest import Lab, Node, config, holds, sh, vrrp_yaml, wait_for

pytestmark = pytest.mark.netns

KEEPALIVED = """
global_defs {{
    router_id {router_id}
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {interval}
    {auth}
    {unicast}
    virtual_ipaddress {{
        {vip}
    }}
}}
"""


@dataclass(frozen=True)
class Case:
    version: int
    interval: float
    vip: str
    prefix: int
    password: str | None = None
    unicast: bool = False

    def keepalived(self, priority: int) -> str:
        auth = f"authentication {{\n        auth_type PASS\n        auth_pass {self.password}\n    }}"
        return KEEPALIVED.format(
            router_id=f"k{priority}",
            version=self.version,
            priority=priority,
            interval=f"{self.interval:g}",
            auth=auth if self.password else "",
            unicast="unicast_src_ip 10.77.0.1\n    unicast_peer {\n        10.77.0.2\n    }" if self.unicast else "",
            vip=f"{self.vip}/{self.prefix}",
        )

    def pyvs(self, priority: int) -> str:
        extra = f"    auth_pass: {self.password}\n" if self.password else ""
        extra += "    unicast_peers: [10.77.0.1]\n" if self.unicast else ""
        spec = f"{round(self.interval * 1000)}ms"
        return config(vrrp_yaml(priority=priority, interval=spec, version=self.version,
                                vips=(f"{self.vip}/{self.prefix}",), extra=extra))

    def master_down(self, priority: int) -> float:
        skew = (256 - priority) / 256 * (1.0 if self.version == 2 else self.interval)
        return 3 * self.interval + skew


CASES = {
    "v3-ipv4": Case(3, 0.1, "10.77.0.100", 24),
    "v3-ipv6": Case(3, 0.1, "fd77::100", 64),
    "v3-ipv4-unicast": Case(3, 0.1, "10.77.0.100", 24, unicast=True),
    "v2-ipv4-password": Case(2, 1.0, "10.77.0.100", 24, password="secret"),
}


def drop_vip(node: Node, case: Case) -> None:
    """A SIGKILLed daemon leaves its VIP behind; a dead host would not answer for it."""
    sh("ip", "-n", node.ns, "addr", "del", f"{case.vip}/{case.prefix}", "dev", "eth0", check=False)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_keepalived_and_pyvs_elect_and_fail_over_both_ways(lab: Lab, case: Case) -> None:
    k, p = lab.node("k", 1), lab.node("p", 2)
    vip = case.vip

    def only(name: str) -> bool:
        return lab.holders(vip) == [name]

    # 1. keepalived (200) is elected; pyvs (100) stays backup past its master-down interval.
    ka = k.keepalived(case.keepalived(200))
    py = p.pyvs(case.pyvs(100))
    wait_for(lambda: only("k"), case.master_down(200) + 3, "keepalived to be master")
    holds(lambda: only("k"), case.master_down(100) + 0.3, "keepalived master, pyvs backup")

    # 2. keepalived dies: pyvs takes over.
    ka.kill()
    took = wait_for(lambda: p.has(vip), case.master_down(100) + 2, "pyvs to take over from keepalived")
    print(f"\nVRRPv{case.version} {vip}: keepalived -> pyvs failover {took:.3f}s")
    assert took <= case.master_down(100) + 0.5
    drop_vip(k, case)

    # 3. keepalived returns at priority 50: it accepts pyvs's adverts and stays backup.
    ka = k.keepalived(case.keepalived(50), name="keepalived-50")
    wait_for(lambda: "Entering BACKUP STATE" in ka.text(), 3, "keepalived to start as backup")
    holds(lambda: only("p"), case.master_down(50) + 0.3, "pyvs master, keepalived backup")

    # 4. pyvs dies: keepalived takes over.
    py.kill()
    took = wait_for(lambda: k.has(vip), case.master_down(50) + 2, "keepalived to take over from pyvs")
    print(f"VRRPv{case.version} {vip}: pyvs -> keepalived failover {took:.3f}s")
    assert took <= case.master_down(50) + 0.5
    drop_vip(p, case)
    assert only("k")


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_neither_side_logs_a_rejected_advert(lab: Lab, case: Case) -> None:
    """Elections can succeed by luck of timing; the logs say whether each packet passed."""
    k, p = lab.node("k", 1), lab.node("p", 2)
    first = k.keepalived(case.keepalived(200))
    py = p.pyvs(case.pyvs(100))
    wait_for(lambda: lab.holders(case.vip) == ["k"], case.master_down(200) + 3, "keepalived to be master")
    first.stop()  # priority 0: pyvs takes over within skew time
    wait_for(lambda: lab.holders(case.vip) == ["p"], 2, "pyvs to take over after keepalived resigned")
    second = k.keepalived(case.keepalived(50), name="keepalived-50")
    holds(lambda: lab.holders(case.vip) == ["p"], case.master_down(50) + 0.3, "pyvs master")
    second.stop()
    py.stop()
    for ka in (first, second):
        text = ka.text().lower()
        assert "entering backup state" in text
        for word in ("invalid", "bad", "mismatch", "wrong", "error", "drop", "ignor"):
            assert word not in text, ka.text()
    assert "dropped" not in py.text() and "WARNING" not in py.text(), py.text()

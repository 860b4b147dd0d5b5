"""KernelDataPlanes: built from a config, fed by health messages, undone on errors;
the IPVS data plane over a recording stand-in for pyroute2's IPVS socket."""

from __future__ import annotations

from typing import Any

import pytest

from pyvs.balance.base import Target
from pyvs.balance.slowstart import WEIGHT_SCALE
from pyvs.config.loader import load_text
from pyvs.l4.ipvs import IpvsDataPlane, scheduler_name
from pyvs.l4.kernel import KernelDataPlaneError, KernelDataPlanes, nft_plan, weights_from_targets
from pyvs.l4.nftables import KernelServer
from tests.unit.l4.test_nftables import Recorder, owners

CONFIG = """\
listeners:
  - {name: web, mode: tcp, bind: ["10.78.1.1:80"], backend: be, dataplane: nftables}
  - {name: dns, mode: udp, bind: ["10.78.1.1:53"], backend: be, dataplane: nftables,
     kernel: {table: my_dns, masquerade: false}}
  - {name: user, mode: tcp, bind: ["127.0.0.1:9000"], backend: be}
backends:
  - name: be
    balance: source
    hash_type: consistent
    servers:
      - {name: a, address: "10.78.2.11:8080", weight: 2}
      - {name: b, address: "10.78.2.12:8080"}
"""


@pytest.fixture(autouse=True)
def _nft_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyvs.l4.nftables.tool_problem", lambda: None)


def test_plans_come_from_the_config() -> None:
    cfg = load_text(CONFIG)
    web = nft_plan(cfg.listeners[0], cfg.backends[0])
    assert (web.table, web.protocol, web.vips, web.algorithm, web.consistent, web.masquerade) == (
        "pyvs_web", "tcp", (("10.78.1.1", 80),), "jhash", True, True)
    dns = nft_plan(cfg.listeners[1], cfg.backends[0])
    assert (dns.table, dns.protocol, dns.masquerade) == ("my_dns", "udp", False)
    assert web.servers[0] == KernelServer("a", "10.78.2.11", 8080, 2, False)


def test_only_kernel_listeners_get_a_plane_and_health_messages_reach_them() -> None:
    r = Recorder()
    planes = KernelDataPlanes(load_text(CONFIG), nft=r)
    assert [p.listener for p in planes.planes] == ["web", "dns"]
    planes.start()
    assert len(r.batches) == 2
    planes.on_server_message({"type": "server", "backend": "be", "server": "b", "eligible": False,
                              "weight": WEIGHT_SCALE})
    assert len(r.batches) == 4  # both planes rewrote their dispatch chain
    assert set(owners(r.batches[-1][1]["add"]["rule"]["expr"][0]["vmap"])) == {"srv0"}
    planes.on_server_message({"type": "server", "backend": "other", "server": "x", "eligible": False, "weight": 0})
    planes.on_server_message({"type": "ping"})
    assert len(r.batches) == 4
    planes.stop()
    assert r.calls[-2:] == [["delete", "table", "ip", "my_dns"], ["delete", "table", "ip", "pyvs_web"]]


def test_a_failed_start_undoes_the_planes_already_programmed() -> None:
    class FailSecond(Recorder):
        def run(self, args: Any, stdin: str | None = None) -> str:
            if stdin is not None and len(self.batches) == 1:
                raise RuntimeError("nft: Operation not permitted")
            return super().run(args, stdin)

    r = FailSecond()
    planes = KernelDataPlanes(load_text(CONFIG), nft=r)
    with pytest.raises(KernelDataPlaneError, match="listener 'dns': nft: Operation not permitted"):
        planes.start()
    assert r.calls[-1] == ["delete", "table", "ip", "pyvs_web"]


def test_weights_from_targets() -> None:
    ts = [Target(0, "a", 5), Target(1, "b", 1, eligible=False), Target(2, "c", 0)]
    assert weights_from_targets(ts) == {"a": 5, "c": 0}


# ---------------------------------------------------------------- IPVS


class FakeIpvs:
    """Records service/dest calls the way pyroute2's IPVS socket receives them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.closed = False

    def service(self, command: str, service: Any = None) -> list[Any]:
        self.calls.append(("service", command, (service["addr"], service["port"], service["sched_name"])))
        if command == "del" and len([c for c in self.calls if c[:2] == ("service", "add")]) == 0:
            raise OSError("no such service")
        return []

    def dest(self, command: str, service: Any, dest: Any = None) -> list[Any]:
        if command == "dump":
            return []
        self.calls.append(("dest", command, (dest["addr"], dest["port"], dest["weight"], dest["fwd_method"])))
        return []

    def close(self) -> None:
        self.closed = True


def test_ipvs_scheduler_names() -> None:
    assert scheduler_name("roundrobin", [1, 1]) == "rr"
    assert scheduler_name("roundrobin", [3, 1]) == "wrr"
    assert scheduler_name("weighted-leastconn", [1]) == "wlc"
    assert scheduler_name("source", [1]) == "sh"
    assert scheduler_name("maglev", [1]) == "mh"


def test_ipvs_services_destinations_and_health() -> None:
    fake = FakeIpvs()
    servers = [KernelServer("a", "10.78.2.11", 8080, 3), KernelServer("b", "10.78.2.12", 8080, 1)]
    plane = IpvsDataPlane("web", "be", "roundrobin", "tcp", [("10.78.1.1", 80)], servers, lambda: fake)
    plane.start()
    assert ("service", "add", ("10.78.1.1", 80, "wrr")) in fake.calls
    assert [c for c in fake.calls if c[0] == "dest"] == [
        ("dest", "add", ("10.78.2.11", 8080, 3, 0)), ("dest", "add", ("10.78.2.12", 8080, 1, 0))]
    fake.calls.clear()
    plane.set_servers({"a": 3})  # b fails its check
    assert fake.calls == [("dest", "del", ("10.78.2.12", 8080, 0, 0))]
    fake.calls.clear()
    plane.set_servers({"a": 5, "b": 1})  # a's weight changes, b is back
    assert sorted(fake.calls) == [("dest", "add", ("10.78.2.12", 8080, 1, 0)),
                                  ("dest", "set", ("10.78.2.11", 8080, 5, 0))]
    assert plane.statistics()["servers"][0]["weight"] == 5
    plane.stop()
    assert fake.calls[-1] == ("service", "del", ("10.78.1.1", 80, "wrr")) and fake.closed


def test_reload_keeps_unchanged_tables_and_replaces_a_changed_one_in_one_transaction() -> None:
    r = Recorder()
    planes = KernelDataPlanes(load_text(CONFIG), nft=r)
    planes.start()
    r.batches.clear()
    changed = CONFIG.replace('weight: 2}', 'weight: 5}').replace(
        '  - {name: dns, mode: udp, bind: ["10.78.1.1:53"], backend: be, dataplane: nftables,\n'
        '     kernel: {table: my_dns, masquerade: false}}\n', '')
    changed = changed.replace("listeners:\n", "listeners:\n"
                              '  - {name: new, mode: tcp, bind: ["10.78.1.1:81"], backend: be, dataplane: nftables}\n')
    notes = planes.replace(load_text(changed))
    assert sorted(notes) == sorted([
        "listener 'new': kernel data plane added",
        "listener 'web': nftables table pyvs_web replaced",
        "listener 'dns': kernel data plane removed",
    ])
    web = [b for b in r.batches if any("delete" in c and c["delete"].get("table", {}).get("name") == "pyvs_web"
                                        for c in b)]
    assert len(web) == 1  # one transaction: the old table's deletion and the whole new table
    assert web[0][0] == {"delete": {"table": {"family": "ip", "name": "pyvs_web"}}}
    assert any("add" in c and "table" in c["add"] for c in web[0][1:])
    assert sorted(p.listener for p in planes.started) == ["new", "web"]
    r.batches.clear()
    assert planes.replace(load_text(changed)) == []  # nothing changed: nothing touched
    assert r.batches == []

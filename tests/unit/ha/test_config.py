"""The ``vrrp:`` section of the config file: defaults, rules and errors that name the key."""

from __future__ import annotations

import pytest

from pyvs.config.loader import ConfigError, load_text

BASE = """
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    virtual_ips: [10.0.0.100/24]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return info.value.problems


def test_defaults() -> None:
    (inst,) = load_text(BASE).vrrp
    assert (inst.priority, inst.advert_interval, inst.version, inst.preempts) == (100, 1.0, 3, True)
    assert inst.unicast_peers == [] and inst.family == 4
    assert inst.track.interfaces == [] and inst.notify is None


def test_the_design_example_loads() -> None:
    cfg = load_text("""
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    priority: 150
    advert_interval: 1s
    version: 3
    preempt: true
    unicast_peers: []
    virtual_ips: ["10.0.0.100/24"]
""")
    assert cfg.vrrp[0].priority == 150


def test_v3_interval_in_10ms_steps() -> None:
    assert load_text(BASE + "    advert_interval: 100ms\n").vrrp[0].advert_interval == pytest.approx(0.1)
    assert "10ms" in problems(BASE + "    advert_interval: 15ms\n")[0]
    assert problems(BASE + "    advert_interval: 41s\n")


def test_v2_rules() -> None:
    v2 = BASE + "    version: 2\n"
    assert load_text(v2 + "    auth_pass: secret\n").vrrp[0].auth_pass == "secret"
    assert "whole seconds" in problems(v2 + "    advert_interval: 500ms\n")[0]
    assert "IPv4 only" in problems(v2.replace("10.0.0.100/24", "fd00::100/64"))[0]
    assert "version 2" in problems(BASE + "    auth_pass: secret\n")[0]
    assert problems(v2 + "    auth_pass: ninechars\n")[0].startswith("vrrp[0].auth_pass")


def test_addresses() -> None:
    cfg = load_text(BASE.replace("10.0.0.100/24", "10.0.0.100, 10.0.0.101/24"))
    assert cfg.vrrp[0].virtual_ips == ["10.0.0.100/32", "10.0.0.101/24"]
    assert "one instance per address family" in problems(BASE.replace("10.0.0.100/24", "10.0.0.1, fd00::1"))[0]
    assert problems(BASE.replace("10.0.0.100/24", "eth0"))[0].startswith("vrrp[0].virtual_ips")
    assert "family" in problems(BASE + "    unicast_peers: [fd00::2]\n")[0]
    assert problems(BASE + "    unicast_peers: [peer.example]\n")[0].startswith("vrrp[0].unicast_peers")


def test_preempt_spellings() -> None:
    assert load_text(BASE + "    nopreempt: true\n").vrrp[0].preempts is False
    assert load_text(BASE + "    preempt: false\n").vrrp[0].preempts is False
    assert "contradict" in problems(BASE + "    preempt: true\n    nopreempt: true\n")[0]


def test_unknown_keys_and_ranges_name_the_key() -> None:
    assert problems(BASE + "    advert_int: 1\n") == ["vrrp[0].advert_int: unknown key"]
    assert problems(BASE.replace("vrid: 51", "vrid: 256"))[0].startswith("vrrp[0].vrid")
    assert problems(BASE + "    priority: 0\n")[0].startswith("vrrp[0].priority")


def test_instances_are_checked_together() -> None:
    twice = BASE + BASE.split("vrrp:\n", 1)[1]
    assert "used twice" in problems(twice)[0]
    other_name = twice.replace("VI_1", "VI_2", 1)
    assert "both use vrid 51 on eth0" in problems(other_name)[0]
    v6 = other_name.replace("10.0.0.100/24", "fd00::100/64", 1)
    assert load_text(v6).vrrp[0].family == 6  # same VRID, other family: a separate router


def test_tracking_references_must_exist() -> None:
    text = BASE + "    track: {backends: [{name: web}]}\n"
    assert problems(text) == ["vrrp: instance 'VI_1' tracks backend 'web', which does not exist"]
    text = BASE + "    track: {listeners: [{name: web}]}\n"
    assert "listener 'web'" in problems(text)[0]
    ok = """
listeners: [{name: web, bind: ["127.0.0.1:8080"], backend: web}]
backends: [{name: web, servers: [{name: s1, address: "127.0.0.1:9001"}]}]
""" + BASE + "    track: {backends: [{name: web, weight: -20}], listeners: [{name: web}]}\n"
    assert load_text(ok).vrrp[0].track.backends[0].weight == -20

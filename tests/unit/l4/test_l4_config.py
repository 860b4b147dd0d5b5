"""Config of tcp/udp listeners: what is accepted, and the exact errors ``pyvs check`` prints."""

from __future__ import annotations

import pytest

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.schema import Config

BACKEND = """\
backends:
  - name: app
    balance: {balance}
    servers:
      - {{name: a, address: "10.78.2.11:8080", weight: 3}}
      - {{name: b, address: "10.78.2.12:8080"}}
"""


def config(listener: str, balance: str = "roundrobin") -> str:
    return f"listeners:\n  - {{name: l4, bind: [\"10.78.1.1:80\"], {listener}}}\n" + BACKEND.format(balance=balance)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return info.value.problems


@pytest.fixture(autouse=True)
def _kernel_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests must not depend on this machine's kernel: the probes say "all fine"
    unless a test says otherwise."""
    monkeypatch.setattr("pyvs.l4.ipvs.kernel_problem", lambda: None)
    monkeypatch.setattr("pyvs.l4.nftables.tool_problem", lambda: None)


def test_tcp_and_udp_listeners_load_with_defaults() -> None:
    cfg = load_text(config("mode: tcp, backend: app"))
    lst = cfg.listeners[0]
    assert (lst.mode, lst.dataplane, lst.send_proxy, lst.accept_proxy, lst.maxconn) == (
        "tcp", "userspace", None, False, 0)
    assert (lst.queue.size, lst.queue.timeout, lst.tcp.idle_timeout) == (1024, 5.0, 300.0)
    assert (lst.udp.session_timeout, lst.udp.max_sessions) == (30.0, 16384)
    assert (lst.kernel.table, lst.kernel.masquerade) == (None, True)
    assert load_text(config("mode: udp, backend: app, udp: {session_timeout: 2s, max_sessions: 10}")) \
        .listeners[0].udp.max_sessions == 10


def test_l4_keys_are_parsed() -> None:
    cfg = load_text(config("mode: tcp, backend: app, send_proxy: v2, accept_proxy: true, maxconn: 100, "
                           "queue: {size: 5, timeout: 250ms}, tcp: {idle_timeout: 1m}"))
    lst = cfg.listeners[0]
    assert (lst.send_proxy, lst.accept_proxy, lst.maxconn, lst.queue.size, lst.queue.timeout,
            lst.tcp.idle_timeout) == ("v2", True, 100, 5, 0.25, 60.0)


@pytest.mark.parametrize(("listener", "error"), [
    ("mode: tcp", "listeners[0]: a tcp listener needs a backend"),
    ("mode: udp, backend: app, routes: [{backend: app}]",
     "listeners[0]: routes are for http listeners; a udp listener takes one backend"),
    ("mode: udp, backend: app, send_proxy: v1",
     "listeners[0]: send_proxy and accept_proxy are for tcp and http listeners"),
    ("mode: tcp, backend: app, dataplane: nftables, send_proxy: v1",
     "listeners[0]: send_proxy, accept_proxy and maxconn need dataplane userspace "
     "(the nftables data plane never sees the bytes)"),
    ("backend: app, dataplane: nftables", "listeners[0]: dataplane 'nftables' is for tcp and udp listeners"),
    ("backend: app, send_proxy: v2",
     "listeners[0]: send_proxy is not available on http listeners yet (accept_proxy is)"),
    ("mode: tcp, backend: app, send_proxy: v3", "listeners[0].send_proxy: Input should be 'v1' or 'v2'"),
    ("mode: tcp, backend: app, dataplane: lvs",
     "listeners[0].dataplane: Input should be 'userspace', 'nftables' or 'ipvs'"),
    ("mode: tcp, backend: app, kernel: {table: 'my table'}",
     "listeners[0].kernel.table: expected letters, digits and _ (at most 64, starting with a letter), "
     "got 'my table'"),
])
def test_errors(listener: str, error: str) -> None:
    assert problems(config(listener)) == [error]


def test_nftables_rejects_an_algorithm_it_cannot_express() -> None:
    assert problems(config("mode: tcp, backend: app, dataplane: nftables", balance="leastconn")) == [
        "listeners[0].dataplane: nftables cannot run balance 'leastconn' of backend 'app'; it can run: "
        "random, roundrobin, source, static-rr, weighted-random"
    ]


def test_kernel_data_plane_needs_ipv4_literals() -> None:
    text = config("mode: tcp, backend: app, dataplane: nftables").replace("10.78.2.12:8080", "srv.example:80")
    text = text.replace("10.78.1.1:80", "0.0.0.0:80")
    assert problems(text) == [
        "listeners[0].bind: the nftables data plane needs the virtual IPv4 address itself and a fixed port, "
        "got 0.0.0.0:80",
        "backends[0].servers[1].address: the nftables data plane of listener 'l4' needs an IPv4 address, "
        "got srv.example:80",
    ]


def test_ipvs_missing_from_the_kernel_is_a_check_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyvs.l4.ipvs.kernel_problem", lambda: "this kernel has no IPVS")
    assert problems(config("mode: tcp, backend: app, dataplane: ipvs, kernel: {masquerade: false}")) == [
        "listeners[0].dataplane: this kernel has no IPVS"
    ]


def test_ipvs_is_lvs_nat_without_masquerade() -> None:
    assert problems(config("mode: tcp, backend: app, dataplane: ipvs", balance="weighted-leastconn")) == [
        "listeners[0].kernel.masquerade: the ipvs data plane is LVS-NAT: set it to false and route the "
        "servers' replies through this host (docs/layer4.md)"
    ]
    cfg = load_text(config("mode: udp, backend: app, dataplane: ipvs, kernel: {masquerade: false}", "maglev"))
    assert cfg.listeners[0].dataplane == "ipvs"


def test_missing_nft_command_is_a_check_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyvs.l4.nftables.tool_problem", lambda: "no nft here")
    assert problems(config("mode: tcp, backend: app, dataplane: nftables")) == [
        "listeners[0].dataplane: no nft here"
    ]


def test_schema_lists_the_new_keys() -> None:
    props = Config.model_json_schema(by_alias=True)["$defs"]["Listener"]["properties"]
    assert {"dataplane", "send_proxy", "accept_proxy", "maxconn", "queue", "tcp", "udp", "kernel"} <= set(props)

"""Tracking rules (keepalived's weights), hysteresis, probes and notify ordering."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyvs.config.loader import load_text
from pyvs.ha.netlink import LinkInfo
from pyvs.ha.notify import Notifier, Transition
from pyvs.ha.tracking import (
    Hysteresis,
    Tracked,
    Tracking,
    combine,
    health_source,
    http_answers,
    run_script,
    tcp_connects,
)


def test_weight_rules() -> None:
    assert combine([]) == (False, 0)
    assert combine([Tracked("script", "x", 0, ok=False)]) == (True, 0)
    assert combine([Tracked("script", "x", 0, ok=True)]) == (False, 0)
    assert combine([Tracked("script", "x", -20, ok=False), Tracked("script", "y", -5, ok=True)]) == (False, -20)
    assert combine([Tracked("script", "x", 30, ok=True), Tracked("script", "y", 10, ok=False)]) == (False, 30)
    assert combine([Tracked("i", "a", -20, ok=False), Tracked("i", "b", 0, ok=False)]) == (True, -20)


def test_hysteresis_needs_runs_in_a_row() -> None:
    h = Hysteresis(rise=2, fall=3)
    assert [h.feed(x) for x in (False, False, True, False, False)] == [False, False, False, False, False]
    assert h.feed(False) is True and h.ok is False
    assert h.feed(True) is False and h.ok is False
    assert h.feed(True) is True and h.ok is True


CFG = """
listeners: [{name: web, bind: ["0.0.0.0:8080"], backend: web}]
backends:
  - name: web
    servers: [{name: s1, address: "127.0.0.1:9001"}]
  - name: checked
    health: {type: tcp, interval: 1s}
    servers: [{name: s1, address: "127.0.0.1:9002"}]
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    virtual_ips: [10.0.0.100/24]
    track:
      interfaces: [{name: eth1, weight: -30}]
      scripts: [{command: "true", weight: 10}]
      backends: [{name: web, weight: -50}]
      listeners: [{name: web}]
"""


def link(name: str, up: bool) -> LinkInfo:
    return LinkInfo(name, 2, b"\0" * 6, up, (ipaddress.IPv4Interface("10.0.0.1/24"),), ())


def test_links_feed_the_own_interface_and_tracked_ones() -> None:
    cfg = load_text(CFG)
    calls: list[tuple[bool, int]] = []
    tr = Tracking(cfg.vrrp[0], cfg, lambda: calls.append(tr.result()))
    assert [(t.kind, t.name, t.weight) for t in tr.items] == [
        ("interface", "eth0", 0), ("interface", "eth1", -30), ("script", "true", 10),
        ("backend", "web", -50), ("listener", "web", 0),
    ]
    assert tr.result() == (False, 10)
    tr.links_changed({"eth0": link("eth0", True), "eth1": link("eth1", False)})
    assert calls == [(False, -20)]
    tr.links_changed({"eth0": link("eth0", True), "eth1": link("eth1", False)})
    assert len(calls) == 1  # nothing changed, no callback
    tr.links_changed({"eth0": None, "eth1": link("eth1", True)})  # the own interface vanished
    assert calls[-1] == (True, 10)


def test_health_source_reads_the_health_manager() -> None:
    def entry(eligible: bool, checked: bool = True) -> SimpleNamespace:
        return SimpleNamespace(check=object() if checked else None, health=SimpleNamespace(eligible=eligible))

    manager = SimpleNamespace(entries={
        ("a", "s1"): entry(False), ("a", "s2"): entry(True),
        ("b", "s1"): entry(False), ("c", "s1"): entry(True, checked=False),
    })
    up = health_source(manager)
    assert (up("a"), up("b"), up("c")) == (True, False, None)


async def test_script_probe_exit_status_and_timeout() -> None:
    assert await run_script("true", 2.0) is True
    assert await run_script("false", 2.0) is False
    assert await run_script("/nonexistent/command", 2.0) is False
    assert await run_script(f"{sys.executable} -c 'import time; time.sleep(30)'", 0.2) is False


async def test_tcp_and_http_probes() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(handle, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    async with server:
        assert await tcp_connects([("127.0.0.1", closed_port), ("127.0.0.1", port)], 1.0) is True
        assert await tcp_connects([("127.0.0.1", closed_port)], 1.0) is False
        assert await http_answers("127.0.0.1", port, 1.0) is True  # any status: the data path answered
        assert await http_answers("127.0.0.1", closed_port, 1.0) is False


async def test_http_probe_fails_on_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers: like a worker whose loop is stuck

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        assert await http_answers("127.0.0.1", server.sockets[0].getsockname()[1], 0.2) is False


async def test_notify_runs_in_order_with_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "notify.log"
    script = f'echo "$1 $2 $3 $PYVS_VRRP_PRIORITY" >> {out}'
    n = Notifier(f"sh -c '{script}' notify")
    for old, new in (("INIT", "BACKUP"), ("BACKUP", "MASTER"), ("MASTER", "BACKUP")):
        n.notify(Transition("VI_1", old, new, 100))
    await n.close()
    assert out.read_text().splitlines() == ["VI_1 INIT BACKUP 100", "VI_1 BACKUP MASTER 100", "VI_1 MASTER BACKUP 100"]
    assert n.statistics() == {"notify_runs": 3, "notify_failures": 0}


async def test_notify_counts_failures() -> None:
    n = Notifier("false")
    n.notify(Transition("VI_1", "INIT", "BACKUP", 100))
    missing = Notifier("/nonexistent/notify")
    missing.notify(Transition("VI_1", "INIT", "BACKUP", 100))
    await n.close()
    await missing.close()
    assert n.statistics() == {"notify_runs": 1, "notify_failures": 1}
    assert missing.statistics() == {"notify_runs": 1, "notify_failures": 1}


async def test_notify_without_command_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(None)
    with caplog.at_level("INFO", logger="pyvs.ha"):
        n.notify(Transition("VI_1", "BACKUP", "MASTER", 150))
    await n.close()
    assert "vrrp VI_1: BACKUP -> MASTER (priority 150)" in caplog.text
    assert n.statistics() == {"notify_runs": 0, "notify_failures": 0}

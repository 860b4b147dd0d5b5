"""Health checks against real misbehaving servers: the dead application is caught,
traffic stops reaching it, and it comes back carefully."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.harness import Backend, LoopThread, Pyvs, RawBackend, curl, free_port, read_head

FAST = {"interval": "100ms", "timeout": "300ms", "rise": 2, "fall": 2, "jitter": 0.1}


def wait_until(pred: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def state(pyvs: Pyvs, backend: str, server: str) -> str:
    for b in pyvs.status()["backends"]:
        if b["name"] == backend:
            for s in b["servers"]:
                if s["name"] == server:
                    return str(s.get("state", "?"))
    return "?"


def proxy(tmp: Path, servers: list[dict[str, Any]], **backend: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": servers, **backend}],
    }
    return Pyvs(cfg, tmp), port


async def _answer(status: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        try:
            await read_head(r)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        w.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nno" % status)
        await w.drain()


async def _hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read()  # accept, read, never answer


@pytest.fixture()
def good(loop_thread: LoopThread) -> Iterator[Backend]:
    b = Backend(loop_thread, "good")
    yield b
    b.close()


@pytest.fixture()
def good_and_dead(loop_thread: LoopThread, good: Backend, tmp_path: Path) -> Iterator[tuple[Pyvs, int]]:
    """pyvs over a live server and one whose port is open but answers 500, once the
    http check has taken the dead one out."""
    dead = RawBackend(loop_thread, lambda r, w: _answer(500, r, w))
    pyvs, port = proxy(
        tmp_path,
        [{"name": "good", "address": good.address}, {"name": "dead", "address": dead.address}],
        health={"type": "http", "path": "/name", **FAST},
    )
    try:
        wait_until(lambda: state(pyvs, "b", "dead") == "DOWN", what="dead server DOWN")
        yield pyvs, port
    finally:
        pyvs.stop()
        dead.close()


def test_port_open_but_application_dead_is_taken_out(good: Backend, good_and_dead: tuple[Pyvs, int]) -> None:
    pyvs, port = good_and_dead
    assert state(pyvs, "b", "good") == "UP"
    before = good.requests
    codes = [curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/name").stdout
             for _ in range(20)]
    assert codes == [b"200"] * 20
    # Every request reached the live server (its health checks are counted apart).
    assert good.requests - before >= 20
    st = pyvs.status()
    dead_st = next(s for s in st["backends"][0]["servers"] if s["name"] == "dead")
    assert dead_st["health"]["last_check"]["detail"].startswith("status 500")
    assert dead_st["requests"] == 0 or dead_st["health"]["transitions"] >= 1


@pytest.mark.parametrize("kind", ["hang", "refused", "slow"])
def test_hanging_refusing_and_slow_servers_go_down(
    kind: str, loop_thread: LoopThread, good: Backend, tmp_path: Path
) -> None:
    raw = None
    if kind == "hang":
        raw = RawBackend(loop_thread, _hang)
        addr = raw.address
    elif kind == "refused":
        addr = f"127.0.0.1:{free_port()}"
    else:
        addr = good.address  # /slow answers after 1 s, beyond the 300 ms timeout
    pyvs, _ = proxy(
        tmp_path,
        [{"name": "x", "address": addr}],
        health={"type": "http", "path": "/slow?delay=1" if kind == "slow" else "/name", **FAST},
    )
    try:
        wait_until(lambda: state(pyvs, "b", "x") == "DOWN", what=f"{kind} server DOWN")
        detail = pyvs.status()["backends"][0]["servers"][0]["health"]["last_check"]["detail"]
        assert ("timeout" in detail) if kind != "refused" else ("refused" in detail.lower())
    finally:
        pyvs.stop()
        if raw is not None:
            raw.close()


def test_flapping_server_follows_rise_and_fall(loop_thread: LoopThread, tmp_path: Path) -> None:
    healthy = {"on": True}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["on"] else 503, text="x")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/h", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    port = free_port()
    runner = loop_thread.run(start())
    pyvs, _ = proxy(tmp_path, [{"name": "f", "address": f"127.0.0.1:{port}"}],
                    health={"type": "http", "path": "/h", **FAST, "rise": 3})
    try:
        wait_until(lambda: pyvs.status()["backends"][0]["servers"][0]["health"]["checks"] >= 2)
        assert state(pyvs, "b", "f") == "UP"
        healthy["on"] = False
        wait_until(lambda: state(pyvs, "b", "f") == "DOWN", what="DOWN after fall")
        healthy["on"] = True
        t0 = time.monotonic()
        wait_until(lambda: state(pyvs, "b", "f") == "UP", what="UP after rise")
        # rise=3 at a 100 ms interval: not before two more intervals have passed.
        assert time.monotonic() - t0 >= 0.15
        assert pyvs.status()["backends"][0]["servers"][0]["health"]["transitions"] == 2
    finally:
        pyvs.stop()
        loop_thread.run(runner.cleanup())


def test_agent_reported_capacity_shifts_traffic(loop_thread: LoopThread, tmp_path: Path) -> None:
    a = Backend(loop_thread, "a")
    b = Backend(loop_thread, "b")

    def agent(reply: bytes) -> RawBackend:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(reply)
            await w.drain()

        return RawBackend(loop_thread, handler)

    agent_a, agent_b = agent(b"50%\n"), agent(b"up 100%\n")
    pyvs, port = proxy(tmp_path, [
        {"name": "a", "address": a.address, "health": {"port": agent_a.port}},
        {"name": "b", "address": b.address, "health": {"port": agent_b.port}},
    ], health={"type": "agent", "port": 1, **FAST})
    try:
        wait_until(lambda: pyvs.status()["backends"][0]["servers"][0]["health"]["agent_percent"] == 50)
        a0, b0 = a.requests, b.requests
        urls = [f"http://127.0.0.1:{port}/name"] * 150
        assert curl(*urls).returncode == 0
        assert (a.requests - a0, b.requests - b0) == (50, 100)
    finally:
        pyvs.stop()
        for x in (a, b, agent_a, agent_b):
            x.close()


def test_agent_drain_takes_no_new_requests(loop_thread: LoopThread, tmp_path: Path) -> None:
    a = Backend(loop_thread, "a")
    b = Backend(loop_thread, "b")

    async def drain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"drain\n")
        await w.drain()

    agent_a = RawBackend(loop_thread, drain)
    pyvs, port = proxy(tmp_path, [
        {"name": "a", "address": a.address, "health": {"type": "agent", "port": agent_a.port, **FAST}},
        {"name": "b", "address": b.address},
    ])
    try:
        wait_until(lambda: state(pyvs, "b", "a") == "DRAIN", what="DRAIN")
        a0 = a.requests
        assert curl(*[f"http://127.0.0.1:{port}/name"] * 20).returncode == 0
        assert a.requests == a0
    finally:
        pyvs.stop()
        for x in (a, b, agent_a):
            x.close()


def test_command_check(good: Backend, tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.write_text("1")
    script = "import os,sys; sys.exit(0 if os.path.exists(sys.argv[1]) and os.environ['PYVS_SERVER_NAME']=='c' else 1)"
    pyvs, _ = proxy(tmp_path, [{"name": "c", "address": good.address}],
                    health={"type": "command", "command": [sys.executable, "-c", script, str(flag)], **FAST})
    try:
        wait_until(lambda: pyvs.status()["backends"][0]["servers"][0]["health"]["checks"] >= 1)
        assert state(pyvs, "b", "c") == "UP"
        flag.unlink()
        wait_until(lambda: state(pyvs, "b", "c") == "DOWN", what="command check DOWN")
        assert pyvs.status()["backends"][0]["servers"][0]["health"]["last_check"]["detail"].startswith("exit 1")
    finally:
        pyvs.stop()


def test_no_client_error_when_a_server_dies(loop_thread: LoopThread, good: Backend, tmp_path: Path) -> None:
    victim = RawBackend(loop_thread, lambda r, w: _answer(200, r, w))
    pyvs, port = proxy(
        tmp_path,
        [{"name": "good", "address": good.address}, {"name": "victim", "address": victim.address}],
        health={"type": "tcp", **FAST},
    )
    try:
        url = f"http://127.0.0.1:{port}/name"
        assert curl(*[url] * 10).returncode == 0
        victim.close()  # now refuses connections
        failures = 0
        for _ in range(60):
            res = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", url)
            failures += res.stdout != b"200"
        # Refused connects are retried on the other server: not a single failure.
        assert failures == 0
        wait_until(lambda: state(pyvs, "b", "victim") == "DOWN", what="victim DOWN")
    finally:
        pyvs.stop()


def test_passive_outlier_ejection_and_return(loop_thread: LoopThread, good: Backend, tmp_path: Path) -> None:
    bad = RawBackend(loop_thread, lambda r, w: _answer(502, r, w))
    pyvs, port = proxy(
        tmp_path,
        [{"name": "good", "address": good.address}, {"name": "bad", "address": bad.address}],
        passive={"consecutive_errors": 3, "base_ejection": "600ms", "max_ejected_percent": 50},
    )
    try:
        url = f"http://127.0.0.1:{port}/name"
        curl(*[url] * 10)
        wait_until(lambda: state(pyvs, "b", "bad") == "DOWN", timeout=5, what="ejection")
        codes = [curl("-s", "-o", "/dev/null", "-w", "%{http_code}", url).stdout for _ in range(10)]
        assert codes == [b"200"] * 10
        wait_until(lambda: state(pyvs, "b", "bad") == "UP", timeout=5, what="return after ejection")
        assert pyvs.status()["backends"][0]["servers"][1]["health"]["ejections"] == 1
    finally:
        pyvs.stop()
        bad.close()


def test_backup_then_sorry_body(loop_thread: LoopThread, good: Backend, tmp_path: Path) -> None:
    primary = RawBackend(loop_thread, lambda r, w: _answer(500, r, w))
    pyvs, port = proxy(
        tmp_path,
        [{"name": "primary", "address": primary.address}, {"name": "spare", "address": good.address, "backup": True}],
        health={"type": "http", "path": "/name", **FAST},
        sorry={"body": "We'll be back soon.\n"},
    )
    try:
        url = f"http://127.0.0.1:{port}/name"
        wait_until(lambda: state(pyvs, "b", "primary") == "DOWN", what="primary DOWN")
        assert curl(url).stdout == b"good"
        good.close()
        wait_until(lambda: state(pyvs, "b", "spare") == "DOWN", what="backup DOWN")
        res = curl("-i", url)
        assert res.stdout.startswith(b"HTTP/1.1 503 ")
        assert res.stdout.endswith(b"We'll be back soon.\n")
    finally:
        pyvs.stop()
        primary.close()


def test_metrics_expose_counters_and_states(good_and_dead: tuple[Pyvs, int]) -> None:
    pyvs, port = good_and_dead
    assert curl(*[f"http://127.0.0.1:{port}/name"] * 5).returncode == 0
    pyvs.wait_status(lambda s: s["totals"]["requests"] >= 5)
    text = curl(f"http://127.0.0.1:{pyvs.admin_port}/metrics").stdout.decode()
    assert 'pyvs_server_state{backend="b",server="dead",state="DOWN"} 1' in text
    assert 'pyvs_server_state{backend="b",server="good",state="UP"} 1' in text
    assert "pyvs_requests_total 5" in text
    assert 'pyvs_server_requests_total{backend="b",server="good"} 5' in text


def test_http_check_over_tls(loop_thread: LoopThread, tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    port = free_port()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="tls ok")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/h", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        return runner

    runner = loop_thread.run(start())
    tls = {"type": "http", "path": "/h", "expect_body": "tls ok", **FAST, "tls": True}
    plain = {"type": "http", "path": "/h", **FAST}
    pyvs, _ = proxy(tmp_path, [
        {"name": "tls", "address": f"127.0.0.1:{port}", "health": tls},
        {"name": "plain", "address": f"127.0.0.1:{port}", "health": plain},
    ])
    try:
        wait_until(lambda: state(pyvs, "b", "plain") == "DOWN", what="plain HTTP to a TLS port DOWN")
        wait_until(lambda: pyvs.status()["backends"][0]["servers"][0]["health"]["checks"] >= 2, what="TLS checks")
        servers = {s["name"]: s for s in pyvs.status()["backends"][0]["servers"]}
        assert servers["tls"]["state"] == "UP" and servers["tls"]["health"]["last_check"]["ok"]
    finally:
        pyvs.stop()
        loop_thread.run(runner.cleanup())

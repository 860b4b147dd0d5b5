"""Reload edge cases: counters in /status do not fall back while the old workers drain,
and a worker that dies during a failed reload is restarted.

Counters:

/status sums the current workers' reports and those of workers a reload retired. A
retired worker still draining (a slow response keeps it) used to be in neither sum
until it exited: every counter dropped for the length of the drain, then came back,
which Prometheus reads as a counter reset and a spike. One worker makes the split
exact: all counted requests are the old worker's.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import LoopThread, Pyvs, RawBackend, free_port, heads


async def _ok(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in heads(r):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()


def _config(port: int, backend: RawBackend, **global_: Any) -> dict[str, Any]:
    return {
        "global": global_,
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "be"}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }


def _get(port: int, path: str = "/", timeout: float = 10) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    assert c.getresponse().read() == b"ok"
    c.close()


def test_counters_hold_while_the_old_generation_drains(tmp_path: Path, loop_thread: LoopThread) -> None:
    release = asyncio.Event()  # set on the test's loop: the slow response may end
    slow_arrived = threading.Event()

    async def origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for head in heads(r):
            if b" /slow " in head.split(b"\r\n", 1)[0]:
                slow_arrived.set()
                await release.wait()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    backend = RawBackend(loop_thread, origin)
    port = free_port()
    p = Pyvs(_config(port, backend, grace="30s"), tmp_path, workers=1)
    slow_status: list[int] = []
    try:
        for _ in range(10):
            _get(port, "/fast")
        p.wait_status(lambda s: s["totals"]["requests"] == 10)

        def slow() -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/slow")
            r = c.getresponse()
            r.read()
            slow_status.append(r.status)
            c.close()

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        assert slow_arrived.wait(10)  # in the old worker: it will drain until released
        p.proc.send_signal(signal.SIGHUP)
        st = p.wait_status(lambda s: s["generation"] == 1 and all(w["ready"] for w in s["workers"])
                           and bool(s["retiring"]), timeout=20)
        assert st["totals"]["requests"] >= 10  # the draining worker's 10 are still counted
        # and keep being counted while it drains, then once it has exited, exactly once
        loop_thread.run(_set(release))
        t.join(30)
        assert slow_status == [200]
        st = p.wait_status(lambda s: not s["retiring"] and s["totals"]["requests"] == 11, timeout=40)
        assert st["totals"]["requests"] == 11
    finally:
        p.stop()
        backend.close()


async def _set(ev: asyncio.Event) -> None:
    ev.set()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == str(pid):
                        out.append(int(d))
            except (OSError, IndexError):
                pass
    return out


def test_an_old_worker_that_dies_during_a_failed_reload_is_restarted(tmp_path: Path,
                                                                      loop_thread: LoopThread) -> None:
    """Worker 0 of the running generation crashes while a reload runs, and the reload then
    fails (a new worker dies before it is ready): the old generation is back in charge and
    must restart its worker 0, which it used to leave dead (/status: pid 0, one process)."""
    backend = RawBackend(loop_thread, _ok)
    port = free_port()
    cfg = _config(port, backend, grace="5s")
    p = Pyvs(cfg, tmp_path, workers=2)
    try:
        st = p.wait_status(lambda s: all(w["ready"] for w in s["workers"]))
        old = [w["pid"] for w in st["workers"]]
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        new: list[int] = []
        while not new:  # the new generation's first process (no event to wait on: /proc is polled)
            assert time.monotonic() < deadline, "no new worker appeared"
            new = [c for c in _children(p.proc.pid) if c not in old]
        os.kill(old[0], signal.SIGKILL)  # an old worker crashes during the reload
        os.kill(new[0], signal.SIGKILL)  # a new one dies before it is ready: the reload fails
        st = p.wait_status(lambda s: s["last_reload"] is not None and not s["last_reload"]["ok"]
                           and all(w["pid"] and w["ready"] for w in s["workers"]), timeout=20)
        assert st["generation"] == 0 and len(st["workers"]) == 2
        assert old[0] not in {w["pid"] for w in st["workers"]}  # restarted, not the dead one
        for _ in range(4):  # and serving
            _get(port)
    finally:
        p.stop()
        backend.close()


def test_counters_survive_a_worker_crash(tmp_path: Path, loop_thread: LoopThread) -> None:
    """A worker killed and restarted: its counts stay in the sums (they used to vanish
    with it, which Prometheus reads as a counter reset)."""
    backend = RawBackend(loop_thread, _ok)
    port = free_port()
    cfg = _config(port, backend)
    p = Pyvs(cfg, tmp_path, workers=1)
    try:
        for _ in range(10):
            _get(port)
        st = p.wait_status(lambda s: s["totals"]["requests"] == 10)
        [dead] = [w["pid"] for w in st["workers"]]
        os.kill(dead, signal.SIGKILL)
        st = p.wait_status(lambda s: all(w["pid"] not in (0, dead) and w["ready"] for w in s["workers"]), timeout=20)
        assert st["totals"]["requests"] == 10
        _get(port)
        assert p.wait_status(lambda s: s["totals"]["requests"] == 11)["totals"]["requests"] == 11
    finally:
        p.stop()
        backend.close()

"""Process lifecycle: workers never outlive the supervisor, a failed start leaves
nothing behind, listeners open only once what they route to listens, shutdown
does not race worker restarts, and two instances on one host leave each other alone.

Every pyvs here is found again through its process table: a worker is a fork of
the supervisor, so its command line names the same (per-test) config file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import ROOT, Backend, LoopThread, Pyvs, RawBackend, free_port, read_head


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie waits for
    init to reap it, which is not pyvs's doing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def processes_for(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (a supervisor and its workers)."""
    needle = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd and alive(int(entry)):
            found.append(int(entry))
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Poll until every pid has exited; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def run_pyvs(cfg: dict[str, Any], tmp: Path, name: str = "pyvs") -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``pyvs run`` on ``cfg``; output goes to a file (not a pipe a leftover
    process could hold open)."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pyvs.cli", "run", "-c", str(path)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, path, log


def minimal(listen_port: int, **extra: Any) -> dict[str, Any]:
    """Two workers, one listener, one server; the admin on a free port (the harness's
    :class:`Pyvs` picks its own: pass ``admin=None`` there)."""
    cfg: dict[str, Any] = {
        "global": {"workers": 2},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{listen_port}"], "backend": "be"}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}]}],
    }
    cfg.update(extra)
    if cfg["admin"] is None:
        del cfg["admin"]
    return cfg


# ------------------------------------------------------------ supervisor death
def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path, loop_thread: LoopThread) -> None:
    """Even a worker with a request in flight (which a graceful stop would wait
    ``grace`` for) exits within a second or so of its supervisor's death."""

    async def never_answers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_head(r)
        await r.read()  # until the worker's side closes: it dies

    be = RawBackend(loop_thread, never_answers)
    port = free_port()
    cfg = minimal(port, admin=None)
    cfg["global"]["grace"] = "30s"
    cfg["backends"][0]["servers"][0]["address"] = be.address
    p = Pyvs(cfg, tmp_path, workers=2)
    try:
        workers = [w["pid"] for w in p.status()["workers"]]
        assert len(workers) == 2 and all(workers)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 5
            while be.connections == 0:
                assert time.monotonic() < deadline, "the request never reached the server"
                time.sleep(0.01)
            p.proc.kill()
            p.proc.wait(5)
            assert wait_gone(workers, 2.0) == [], "workers outlived a SIGKILLed supervisor"
            assert refused(port), "the listener still accepts after the supervisor died"
            assert processes_for(p.path) == []
    finally:
        p.stop()
        be.close()


# -------------------------------------------------------------- failed starts
def _busy_listener(reuse_port: bool = False) -> socket.socket:
    s = socket.socket()
    if reuse_port:  # what another pyvs's worker holds
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def assert_failed_start(cfg: dict[str, Any], tmp: Path, *expected: str) -> str:
    proc, path, log = run_pyvs(cfg, tmp)
    try:
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert rc == 1, out
    # One line says what failed and why; other components may have logged before it
    # (VRRP's link tracking does), but nothing after: no traceback, no restart.
    assert "Traceback" not in out and "restarting" not in out and "stopping" not in out, out
    lines = [x for x in out.splitlines() if x.startswith("pyvs: ")]
    assert len(lines) == 1, f"a failed start must print one line, got:\n{out}"
    assert out.rstrip().endswith(lines[0]), out
    for word in expected:
        assert word in lines[0], out
    assert processes_for(path) == [], f"processes left behind after a failed start:\n{out}"
    return lines[0]


def test_busy_admin_port_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with _busy_listener() as busy:
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        port = free_port()
        cfg = minimal(port, admin={"listen": addr})
        assert_failed_start(cfg, tmp_path, "admin", addr, "in use")
        assert refused(port)


def test_busy_demo_port_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with _busy_listener() as busy:
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        cfg = minimal(free_port(), demo={"servers": [{"name": "d1", "listen": addr}]})
        assert_failed_start(cfg, tmp_path, "demo", "d1", addr, "in use")


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
def test_busy_listener_port_fails_the_start_with_one_line(tmp_path: Path, reuse_port: bool) -> None:
    """Also when the holder set SO_REUSEPORT, as another pyvs does: joining its
    group would silently take half of its connections."""
    with _busy_listener(reuse_port) as busy:
        port = busy.getsockname()[1]
        assert_failed_start(minimal(port), tmp_path, "listener", "web", f"127.0.0.1:{port}", "in use")


def test_a_worker_that_cannot_open_a_listener_fails_the_start(tmp_path: Path) -> None:
    """A conflict only the workers meet (the demo server takes 127.0.0.1:P after the
    supervisor's checks, the workers then bind 0.0.0.0:P) fails the start with the
    worker's reason; the worker is not restarted in a loop."""
    port = free_port()
    cfg = minimal(port, demo={"servers": [{"name": "d1", "listen": f"127.0.0.1:{port}"}]})
    cfg["listeners"][0]["bind"] = [f"0.0.0.0:{port}"]
    assert_failed_start(cfg, tmp_path, "worker", "listener 'web'", f"0.0.0.0:{port}", "in use")


def test_check_refuses_admin_on_a_listener_address(tmp_path: Path) -> None:
    port = free_port()
    cfg = minimal(port, admin={"listen": f"127.0.0.1:{port}"})
    path = tmp_path / "pyvs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pyvs.cli", "check", "-c", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stdout
    assert "admin.listen" in out.stderr and "web" in out.stderr, out.stderr


# ------------------------------------------------ listeners open when ready
def test_first_request_after_the_listener_accepts_is_answered_by_the_demo(tmp_path: Path) -> None:
    """Send the first request the moment the listener accepts: never a 502."""
    for attempt in range(3):
        port, d1, d2 = free_port(), free_port(), free_port()
        cfg = minimal(port, demo={"servers": [{"name": "d1", "listen": f"127.0.0.1:{d1}"},
                                              {"name": "d2", "listen": f"127.0.0.1:{d2}"}]})
        cfg["backends"][0]["servers"] = [{"name": "d1", "address": f"127.0.0.1:{d1}"},
                                         {"name": "d2", "address": f"127.0.0.1:{d2}"}]
        proc, path, log = run_pyvs(cfg, tmp_path, f"demo{attempt}")
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the listener never accepted:\n" + log.read_text()
                try:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except ConnectionRefusedError:
                    continue
            with conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = conn.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
        assert processes_for(path) == []


# ----------------------------------------------------- shutdown vs. restarts
def test_stop_right_after_a_worker_restart_is_prompt(tmp_path: Path) -> None:
    """A worker restarted just before SIGTERM stops with the others (its new
    process must not ignore the SIGTERM it receives before its loop is up), and a
    worker that exits while the supervisor stops is not restarted."""
    cfg = minimal(free_port(), admin=None)
    cfg["global"]["grace"] = "30s"  # a hang would show as ~35 s, far above the bound below
    p = Pyvs(cfg, tmp_path, workers=2)
    try:
        old = p.status()["workers"][0]["pid"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while p.status()["workers"][0]["pid"] in (old, 0):
            assert time.monotonic() < deadline
        start = time.monotonic()
        rc = p.stop()
        took = time.monotonic() - start
        out = p.log.read_text()
        assert rc == 0 and took < 10, f"stop took {took:.1f}s, exit {rc}:\n{out}"
        assert out.count("restarting") == 1, out
        assert processes_for(p.path) == []
    finally:
        p.stop()


# ------------------------------------------------------ two instances, one host
def test_a_second_instance_leaves_the_first_alone(tmp_path: Path, loop_thread: LoopThread) -> None:
    be = Backend(loop_thread, "b1")
    first_port = free_port()
    cfg = minimal(first_port, admin=None)
    cfg["backends"][0]["servers"][0]["address"] = be.address
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Pyvs(cfg, tmp_path / "a", workers=2)

    def get() -> bytes:
        with socket.create_connection(("127.0.0.1", first_port), timeout=5) as s:
            s.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    try:
        before = [w["pid"] for w in a.status()["workers"]]
        assert get().endswith(b"b1")
        second_port = free_port()
        cfg2 = minimal(second_port, admin=None)
        cfg2["backends"][0]["servers"][0]["address"] = be.address
        b = Pyvs(cfg2, tmp_path / "b", workers=2)
        assert get().endswith(b"b1")
        assert b.stop() == 0
        # A second instance on the first one's port is refused, not merged into it.
        clash = minimal(first_port)
        assert_failed_start(clash, tmp_path / "b", "listener", f"127.0.0.1:{first_port}", "in use")
        for _ in range(20):
            assert get().endswith(b"b1")
        st = a.status()
        assert [w["pid"] for w in st["workers"]] == before
        assert all(w["restarts"] == 0 for w in st["workers"])
        assert a.stop() == 0
        assert processes_for(a.path) == [] and processes_for(b.path) == []
    finally:
        a.stop()
        be.close()

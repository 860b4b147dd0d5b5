"""``pyvs ctl`` against a real pyvs: tables, --json, exit codes, the token, top."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, Backend, LoopThread, Pyvs, curl, free_port

TOKEN = "ctl-test-token-0123456789"


def ctl(pyvs: Pyvs | None, *args: str, token_file: Path | None = None, admin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pyvs.cli", "ctl", "--admin",
           admin or f"http://127.0.0.1:{pyvs.admin_port if pyvs else 1}"]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYVS_ADMIN", "PYVS_TOKEN_FILE")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**env, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def env(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ctl")
    a, b = Backend(loop_thread, "a"), Backend(loop_thread, "b")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "app"}],
        "backends": [
            {"name": "app", "servers": [{"name": "a", "address": a.address}, {"name": "b", "address": b.address}]},
            {"name": "other", "servers": [{"name": "b", "address": b.address}]},
        ],
    }
    pyvs = Pyvs(cfg, tmp, workers=2)
    try:
        yield {"pyvs": pyvs, "port": port, "tmp": tmp}
    finally:
        pyvs.stop()
        a.close()
        b.close()


def test_status_table_and_json(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    curl(*[f"http://127.0.0.1:{env['port']}/"] * 5)
    r = ctl(pyvs, "status")
    assert r.returncode == 0, r.stderr
    assert "backends" in r.stdout and "app" in r.stdout and "req/s" in r.stdout
    r = ctl(pyvs, "--json", "status")
    assert r.returncode == 0 and json.loads(r.stdout)["listeners"][0]["name"] == "web"
    r = ctl(pyvs, "status", "--json")  # --json after the command works too
    assert r.returncode == 0 and "rates" in json.loads(r.stdout)


def test_servers(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    r = ctl(pyvs, "servers")
    assert r.returncode == 0 and "UP" in r.stdout and "other" in r.stdout
    r = ctl(pyvs, "--json", "servers", "app")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and [s["name"] for s in doc[0]["servers"]] == ["a", "b"]
    r = ctl(pyvs, "servers", "nope")
    assert r.returncode == 1 and "no backend named 'nope'" in r.stderr


def test_drain_enable_and_names(env: dict[str, Any]) -> None:
    pyvs, port = env["pyvs"], env["port"]
    r = ctl(pyvs, "drain", "a")  # unique name: found in app
    assert r.returncode == 0 and "app/a: DRAIN" in r.stdout, r.stderr
    out = curl(*[f"http://127.0.0.1:{port}/name"] * 10, "-w", "\n").stdout.decode().split()
    assert set(out) == {"b"}
    r = ctl(pyvs, "enable", "app/a")
    assert r.returncode == 0 and "app/a: UP" in r.stdout
    r = ctl(pyvs, "drain", "b")  # in app and other: ambiguous
    assert r.returncode == 2 and "app/b" in r.stderr
    r = ctl(pyvs, "drain", "zz")
    assert r.returncode == 1 and "no server named 'zz'" in r.stderr
    r = ctl(pyvs, "--json", "disable", "other/b")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "MAINT"
    assert ctl(pyvs, "enable", "other/b").returncode == 0


def test_weight(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    r = ctl(pyvs, "weight", "app/b", "3")
    assert r.returncode == 0 and "weight 1 -> 3" in r.stdout and "next reload" in r.stdout
    r = ctl(pyvs, "weight", "app/b", "300")
    assert r.returncode == 2  # usage: out of range
    assert ctl(pyvs, "weight", "app/b", "1").returncode == 0


def test_purge_reload_and_stick(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    r = ctl(pyvs, "purge", "http://x/y")
    assert r.returncode == 1 and "no cache configured" in r.stderr
    r = ctl(pyvs, "stick", "app")
    assert r.returncode == 1 and "no stick table" in r.stderr
    r = ctl(pyvs, "reload")
    assert r.returncode == 0 and "generation" in r.stdout, r.stderr
    pyvs.wait_ready()


def test_refused_reload_is_1_with_the_reasons(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    good = pyvs.path.read_text()
    pyvs.path.write_text(good.replace("roundrobin", "no-such-algorithm") if "roundrobin" in good
                         else good + "\nbogus_key: 1\n")
    try:
        r = ctl(pyvs, "reload")
        assert r.returncode == 1 and "refused" in r.stderr and "\n  " in r.stderr, r.stderr
    finally:
        pyvs.path.write_text(good)


def test_cannot_reach_is_3(env: dict[str, Any]) -> None:
    r = ctl(None, "status", admin=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = ctl(None, "--json", "status", admin=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and json.loads(r.stdout)["ok"] is False


def test_usage_is_2(env: dict[str, Any]) -> None:
    assert ctl(env["pyvs"], "frobnicate").returncode == 2
    assert ctl(env["pyvs"], "drain").returncode == 2


def test_top_draws_frames(env: dict[str, Any]) -> None:
    r = ctl(env["pyvs"], "top", "--interval", "0.2", "--count", "2")
    assert r.returncode == 0 and "servers" in r.stdout and "app" in r.stdout, r.stderr


def test_token(loop_thread: LoopThread, tmp_path: Path) -> None:
    a = Backend(loop_thread, "a")
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cfg: dict[str, Any] = {
        "admin": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token_file)},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "app"}],
        "backends": [{"name": "app", "servers": [{"name": "a", "address": a.address}]}],
    }
    admin = f"http://{cfg['admin']['listen']}"
    cfg_path = tmp_path / "pyvs.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "pyvs.cli", "run", "-c", str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            r = ctl(None, "--json", "status", admin=admin, token_file=token_file)
            if r.returncode == 0 and all(w["ready"] for w in json.loads(r.stdout)["workers"]):
                break
            assert proc.poll() is None
        else:
            raise AssertionError("pyvs with a token never became ready")
        r = ctl(None, "status", admin=admin)
        assert r.returncode == 3 and "401" in r.stderr
        # -c FILE: admin.listen and admin.token_file from the config
        r = subprocess.run([sys.executable, "-m", "pyvs.cli", "ctl", "-c", str(cfg_path), "drain", "a"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 0 and "app/a: DRAIN" in r.stdout, r.stderr
    finally:
        proc.terminate()
        proc.wait(30)
        a.close()

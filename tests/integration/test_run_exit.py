"""`pyvs run` exit status: a part the config asks for that cannot start is a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.harness import ROOT, free_port


def test_vrrp_that_cannot_start_makes_run_exit_1(tmp_path: Path) -> None:
    cfg = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "be"}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}]}],
        "vrrp": [{"name": "VI_1", "interface": "pyvsnosuch0", "vrid": 51, "priority": 100,
                  "virtual_ips": ["10.200.0.1/24"]}],
    }
    path = tmp_path / "pyvs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pyvs.cli", "run", "-c", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "interface 'pyvsnosuch0' does not exist" in out.stderr + out.stdout

"""`pyvs run` exit status: a part the config asks for that cannot start is a failure."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import free_port
from tests.integration.test_lifecycle import assert_failed_start


def test_vrrp_that_cannot_start_makes_run_exit_1(tmp_path: Path) -> None:
    """One line, exit 1, and the workers (already serving when VRRP starts) are gone.

    The admin port is a free one, not the default 9090: a fixed port is shared with
    whatever else runs on the host (another pyvs, another test run)."""
    cfg = {
        "global": {"workers": 2},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "be"}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}]}],
        "vrrp": [{"name": "VI_1", "interface": "pyvsnosuch0", "vrid": 51, "priority": 100,
                  "virtual_ips": ["10.200.0.1/24"]}],
    }
    assert_failed_start(cfg, tmp_path, "interface 'pyvsnosuch0' does not exist")


def test_a_cache_path_that_is_not_a_directory_makes_run_exit_1(tmp_path: Path) -> None:
    """The shared cache's directory (pyvs/accel/shared_store.py) is checked at start:
    one line naming the key, exit 1, no process left."""
    missing = tmp_path / "no-such-dir"
    cfg = {
        "global": {"workers": 2},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "be",
                       "cache": {"path": str(missing)}}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}]}],
    }
    assert_failed_start(cfg, tmp_path, f"web.cache.path: {missing} is not a directory")

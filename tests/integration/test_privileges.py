"""global.user: workers give up root once their listeners are open (the supervisor
keeps it); they still die with their supervisor; a reload's workers do the same."""

from __future__ import annotations

import os
import pwd
import signal
from pathlib import Path

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port
from tests.integration.test_lifecycle import minimal, wait_gone
from tests.integration.test_persist import wait_until


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture()
def nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.fail("this test drops root: the suite runs as root (make test under sudo)")
    return pwd.getpwnam("nobody")


def test_workers_run_as_the_user_and_still_die_with_the_supervisor(
        tmp_path: Path, loop_thread: LoopThread, nobody: pwd.struct_passwd) -> None:
    be = Backend(loop_thread, "s1")
    port = free_port()
    cfg = minimal(port, admin=None)
    cfg["global"]["user"] = "nobody"
    cfg["backends"][0]["servers"][0]["address"] = be.address
    p = Pyvs(cfg, tmp_path, workers=2)
    try:
        workers = [w["pid"] for w in p.status()["workers"]]
        assert [uid_of(w) for w in workers] == [nobody.pw_uid] * 2
        assert uid_of(p.proc.pid) == 0  # VRRP and the kernel data planes need it
        assert curl(f"http://127.0.0.1:{port}/name").stdout == b"s1"
        os.kill(p.proc.pid, signal.SIGHUP)  # a reload's new workers switch too
        wait_until(lambda: p.status()["generation"] == 1 and all(w["ready"] for w in p.status()["workers"]),
                   what="generation 1 ready")
        new = [w["pid"] for w in p.status()["workers"]]
        assert set(new).isdisjoint(workers)
        assert [uid_of(w) for w in new] == [nobody.pw_uid] * 2
        assert curl(f"http://127.0.0.1:{port}/name").stdout == b"s1"
        p.proc.kill()  # the parent-death signal was asked for again after the switch
        p.proc.wait(5)
        assert wait_gone(new, 2.0) == [], "workers that dropped root outlived a SIGKILLed supervisor"
    finally:
        p.stop()
        be.close()


def test_a_user_that_does_not_exist_is_named(tmp_path: Path) -> None:
    from pyvs.config.loader import ConfigError, load_text

    with pytest.raises(ConfigError) as err:
        load_text("global: {user: no-such-user-here}\n", "t.yaml")
    assert "no such user 'no-such-user-here'" in str(err.value.problems)

"""Stick tables shared through a real redis-server (started by the tests on a free
port, in a temporary directory): two pyvs nodes agree on a client's server, and
killing Redis mid-run fails no request; after Redis returns the tables re-sync."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyvs.config.persist_schema import StateConfig
from pyvs.persist.redis_store import RedisStore, redact
from pyvs.persist.store import LEARN, MOVE, Remote
from tests.integration.harness import Backend, LoopThread, Pyvs, free_port
from tests.integration.test_persist import fetch, gather, persist_stats, wait_until


class RedisServer:
    """A throwaway redis-server: no persistence, loopback only."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._ping, timeout=10, what="redis-server to answer")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def sessions(self, backend: str = "b") -> dict[str, str]:
        c = self.client()
        head = f"pyvs:stick:{backend}:"
        return {k[len(head):]: str(c.get(k)) for k in c.scan_iter(match=head + "*")}


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    # `make test` installs redis-server (Makefile APT_TEST); a missing one is a setup bug.
    assert shutil.which("redis-server"), "redis-server is missing: run the tests through `make test`"
    r = RedisServer(tmp_path)
    yield r
    r.kill()


@pytest.fixture()
def backends(loop_thread: LoopThread) -> Iterator[list[Backend]]:
    bs = [Backend(loop_thread, f"s{i}") for i in range(1, 4)]
    yield bs
    for b in bs:
        b.close()


def node(tmp: Path, backends: list[Backend], url: str, *, workers: int = 1) -> tuple[Pyvs, int]:
    port = free_port()
    cfg: dict[str, Any] = {
        "state": {"redis": url, "timeout": "300ms", "retry_interval": "100ms"},
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "persistence": {"type": "source", "timeout": "10m"},
                      "servers": [{"name": b.name, "address": b.address} for b in backends]}],
    }
    return Pyvs(cfg, tmp, workers=workers), port


def worker_entries(pyvs: Pyvs) -> int:
    return int(persist_stats(pyvs)["b"].get("entries", 0))


def test_two_nodes_sharing_redis_agree(loop_thread: LoopThread, backends: list[Backend], redis_server: RedisServer,
                                       tmp_path: Path) -> None:
    a, port_a = node(tmp_path, backends, redis_server.url)
    b, port_b = node(tmp_path, backends, redis_server.url)
    try:
        # Put b's round robin one step ahead: without shared tables the nodes would disagree.
        assert loop_thread.run(fetch(port_b, "127.0.1.250"))[0] == 200
        for first, second, net in ((port_a, port_b, 1), (port_b, port_a, 2)):
            clients = [f"127.0.{net}.{i}" for i in range(1, 11)]
            chosen = {c: loop_thread.run(fetch(first, c))[2] for c in clients}
            assert len(set(chosen.values())) == 3
            other = b if second == port_b else a
            want = 1 + 10 * net  # every session so far: the warm-up and 10 per round
            wait_until(lambda o=other, w=want: worker_entries(o) >= w, what="entries to reach the other node")
            for c in clients:
                assert loop_thread.run(fetch(second, c))[2] == chosen[c], c
        stored = redis_server.sessions()
        assert stored["127.0.1.3"] in ("s1", "s2", "s3") and len(stored) == 21
        for n in (a, b):
            st = n.status()["persistence"]
            assert st["store"]["up"] and st["store"]["corrections"] == 0
            assert n.status()["totals"]["redispatches"] == 0
    finally:
        a.stop()
        b.stop()


def test_redis_killed_mid_run_fails_no_request_and_resyncs(loop_thread: LoopThread, backends: list[Backend],
                                                           redis_server: RedisServer, tmp_path: Path) -> None:
    """Traffic runs without pause while Redis is killed, stays away for a while (new
    sessions start meanwhile) and comes back empty."""
    pyvs, port = node(tmp_path, backends, redis_server.url, workers=2)
    clients = [f"127.0.3.{i}" for i in range(1, 21)]
    new = [f"127.0.4.{i}" for i in range(1, 11)]
    seen: dict[str, set[bytes]] = {}
    failures: list[Any] = []
    done = [0]
    running = [True]

    async def user(k: int) -> None:
        i = k
        while running[0]:
            c = clients[i % len(clients)]
            i += 7
            try:
                status, _, body = await fetch(port, c)
            except OSError as exc:
                failures.append((c, exc))
                continue
            if status != 200:
                failures.append((c, status))
            seen.setdefault(c, set()).add(body)
            done[0] += 1

    def store() -> dict[str, Any]:
        return dict(pyvs.status()["persistence"]["store"])

    try:
        wait_until(lambda: store()["up"], what="redis connected")
        traffic = asyncio.run_coroutine_threadsafe(gather(*[user(k) for k in range(5)]), loop_thread.loop)
        wait_until(lambda: len(redis_server.sessions()) == len(clients), what="sessions written to redis")
        redis_server.kill()
        wait_until(lambda: not store()["up"], what="redis seen down")
        clients.extend(new)  # sessions that begin during the outage
        at_kill = done[0]
        wait_until(lambda: store()["errors"] >= 3 and done[0] - at_kill >= 200, what="traffic during the outage")
        redis_server.start()  # empty: it lost everything
        wait_until(lambda: store()["resyncs"] >= 2, what="re-sync after restart")
        stored = redis_server.sessions()
        assert set(stored) == set(clients)  # the outage's new sessions reached Redis too
        at_resync = done[0]
        wait_until(lambda: done[0] - at_resync >= 100, what="traffic after the re-sync")
        running[0] = False
        traffic.result(10)
        assert failures == []
        assert all(len(v) == 1 for v in seen.values()), seen  # sticky throughout
        assert all({stored[c].encode()} == seen[c] for c in clients)
        log = pyvs.log.read_text()
        assert log.count("unreachable") == 1, log  # logged once, however long the outage
    finally:
        running[0] = False
        pyvs.stop()


def test_starting_without_redis_serves_from_memory(loop_thread: LoopThread, backends: list[Backend],
                                                   tmp_path: Path) -> None:
    pyvs, port = node(tmp_path, backends, f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    try:
        replies = [loop_thread.run(fetch(port, "127.0.5.1")) for _ in range(5)]
        assert [r[0] for r in replies] == [200] * 5 and len({r[2] for r in replies}) == 1
        st = pyvs.status()["persistence"]
        assert not st["store"]["up"] and st["tables"]["b"]["entries"] == 1
    finally:
        pyvs.stop()


class Sink:
    """Stands in for a hub: records what the store hands over."""

    def __init__(self, local: list[tuple[str, str, str, float]] | None = None) -> None:
        self.local = local or []
        self.remote: list[tuple[str, str, str]] = []

    def backends(self) -> list[str]:
        return ["b"]

    def on_remote(self, backend: str, entries: list[Remote]) -> None:
        self.remote += [(backend, k, v) for k, v, _ in entries]

    def local_entries(self) -> list[tuple[str, str, str, float]]:
        return self.local


async def until(pred: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_store_first_writer_wins_and_resync_pull(redis_server: RedisServer) -> None:
    cfg = StateConfig(redis=redis_server.url, timeout=1.0, retry_interval=0.1)
    s0, s1 = Sink(local=[("b", "old", "s2", 60.0)]), Sink()
    a = RedisStore(cfg, s0, node="a")
    a.start()
    await until(lambda: a.up, "store a connected")
    b = RedisStore(cfg, s1, node="b")
    b.start()
    try:
        await until(lambda: b.up, "store b connected")
        assert ("b", "old", "s2") in s1.remote  # pushed by a's re-sync, pulled by b's
        a.write("b", "k", "s1", LEARN, 60)
        await until(lambda: ("b", "k", "s1") in s1.remote, "a's entry published to b")
        b.write("b", "k", "s3", LEARN, 60)  # b balanced the same client differently: a was first
        await until(lambda: b.corrections == 1, "b corrected")
        assert s1.remote[-1] == ("b", "k", "s1") and redis_server.client().get("pyvs:stick:b:k") == "s1"
        b.write("b", "k", "s3", MOVE, 60)  # a redispatch overwrites
        await until(lambda: ("b", "k", "s3") in s0.remote, "b's move published to a")
        assert redis_server.client().pttl("pyvs:stick:b:k") > 50_000
        assert ("b", "k", "s1") not in s0.remote  # a node ignores its own publications
    finally:
        await a.stop()
        await b.stop()
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"

"""One instance, one balancer: with several workers, persistence, counts and round
robin behave as one balancer (pyvs/shared). Real pyvs processes, real backends, many
clients with their own loopback source addresses, both zone implementations."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, free_port
from tests.integration.test_persist import fetch, wait_until


@pytest.fixture()
def backends(loop_thread: LoopThread) -> Iterator[list[Backend]]:
    bs = [Backend(loop_thread, f"s{i}") for i in range(1, 4)]
    yield bs
    for b in bs:
        b.close()


@pytest.fixture(params=["c", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run pyvs with either zone implementation (pyvs/shared/zone.py)."""
    monkeypatch.setenv("PYVS_SHARED", request.param)
    return str(request.param)


def start(tmp: Path, backends: list[Backend], *, workers: int, **backend: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": b.name, "address": b.address} for b in backends],
                      **backend}],
    }
    return Pyvs(cfg, tmp, workers=workers), port


@pytest.mark.parametrize("workers", [2, 4])
def test_source_persistence_never_splits_a_client(backends: list[Backend], tmp_path: Path, loop_thread: LoopThread,
                                                  implementation: str, workers: int) -> None:
    """40 clients each open 4 connections at once (a browser loading a page), three
    times: every request of a client reaches one server, whatever worker took it."""
    pyvs, port = start(tmp_path, backends, workers=workers, persistence={"type": "source"})
    try:
        assert pyvs.status()["shared"]["implementation"] == implementation
        clients = [f"127.0.{workers}.{i}" for i in range(10, 50)]

        async def page(src: str) -> list[bytes]:
            replies = await asyncio.gather(*(fetch(port, src) for _ in range(4)))
            return [body for _, _, body in replies]

        async def all_pages() -> list[list[bytes]]:
            return list(await asyncio.gather(*(page(c) for c in clients)))

        seen: dict[str, set[bytes]] = {c: set() for c in clients}
        for _ in range(3):
            for c, bodies in zip(clients, loop_thread.run(all_pages()), strict=True):
                seen[c].update(bodies)
        split = {c: s for c, s in seen.items() if len(s) != 1}
        assert split == {}
        assert len(set().union(*seen.values())) == 3  # and the clients were spread over the servers
        st = pyvs.status()["shared"]["stick_tables"]["b"]
        assert st["entries"] == len(clients)
    finally:
        pyvs.stop()


def test_round_robin_is_one_rotation_for_the_instance(backends: list[Backend], tmp_path: Path,
                                                      loop_thread: LoopThread, implementation: str) -> None:
    """Sequential requests on new connections (the kernel spreads them over the two
    workers) go s1, s2, s3, s1, ...: the README's demo1, demo1, demo2 is gone."""
    pyvs, port = start(tmp_path, backends, workers=2)
    try:
        names = [loop_thread.run(fetch(port))[2] for _ in range(30)]
        first = names.index(b"s1")
        cycle = names[first:first + 3]
        assert sorted(cycle) == [b"s1", b"s2", b"s3"]
        assert names[first:] == (cycle * 10)[: len(names) - first]
    finally:
        pyvs.stop()


def test_leastconn_counts_every_workers_requests(backends: list[Backend], tmp_path: Path,
                                                  loop_thread: LoopThread, implementation: str) -> None:
    """Two slow requests hold s1 and s2; every quick request that follows, whichever
    worker takes it, goes to s3 (per-worker counts would send some to s1 or s2)."""
    pyvs, port = start(tmp_path, backends, workers=2, balance="leastconn")
    try:
        def in_flight() -> int:
            return sum(s["active"] for s in pyvs.status()["backends"][0]["servers"])

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            # One after the other: two picks at the same instant in two workers may both
            # see the same idle server (a pick and its count are not one atomic step).
            slow = []
            for n in (1, 2):
                slow.append(asyncio.ensure_future(fetch(port, path="/slow?delay=3")))
                for _ in range(250):  # until it is in flight somewhere
                    if in_flight() == n:
                        break
                    await asyncio.sleep(0.02)
            quick = [(await fetch(port))[2] for _ in range(12)]
            return [r[2] for r in await asyncio.gather(*slow)], quick

        slow, quick = loop_thread.run(scenario())
        busy = {b.split()[-1] for b in slow}
        assert len(busy) == 2
        (idle,) = {b"s1", b"s2", b"s3"} - busy
        assert quick == [idle] * 12
    finally:
        pyvs.stop()


def test_a_killed_worker_gives_its_counts_back(backends: list[Backend], tmp_path: Path,
                                               loop_thread: LoopThread, implementation: str) -> None:
    pyvs, port = start(tmp_path, backends, workers=2, balance="leastconn")
    try:
        async def hold() -> None:
            await asyncio.gather(*(fetch(port, path="/slow?delay=30") for _ in range(6)), return_exceptions=True)

        task = loop_thread.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(hold()))
        del task

        def active() -> int:
            return sum(s["active"] for s in pyvs.status()["backends"][0]["servers"])

        wait_until(lambda: active() == 6, what="6 requests in flight")
        for w in pyvs.status()["workers"]:
            os.kill(w["pid"], signal.SIGKILL)
        wait_until(lambda: active() == 0, what="counts given back")
    finally:
        pyvs.stop()


def test_drain_keeps_stuck_sessions_and_takes_no_new_ones(backends: list[Backend], tmp_path: Path,
                                                          loop_thread: LoopThread) -> None:
    """HAProxy's drain: the drained server finishes its sessions (clients stuck to it
    keep reaching it), new clients go elsewhere; maint moves everyone."""
    from tests.integration.test_admin_api import api

    pyvs, port = start(tmp_path, backends, workers=2, persistence={"type": "source"})
    try:
        clients = [f"127.0.9.{i}" for i in range(10, 40)]
        first = {c: loop_thread.run(fetch(port, c))[2].decode() for c in clients}
        victim = first[clients[0]]
        stuck = [c for c in clients if first[c] == victim]
        assert api(pyvs, "POST", f"/backends/b/servers/{victim}/drain")[0] == 200
        wait_until(lambda: next(s for s in pyvs.status()["backends"][0]["servers"]
                                if s["name"] == victim)["state"] == "DRAIN", what="DRAIN")
        assert {loop_thread.run(fetch(port, c))[2].decode() for c in stuck} == {victim}
        fresh = {loop_thread.run(fetch(port, f"127.0.10.{i}"))[2].decode() for i in range(10, 40)}
        assert victim not in fresh
        assert api(pyvs, "POST", f"/backends/b/servers/{victim}/maint")[0] == 200
        wait_until(lambda: victim not in {loop_thread.run(fetch(port, c))[2].decode() for c in stuck},
                   what="stuck clients moved off the server in maintenance")
    finally:
        pyvs.stop()


def test_passive_health_counts_failures_from_every_worker(loop_thread: LoopThread, tmp_path: Path) -> None:
    """consecutive_errors: 4 means four failures in a row at the server, whatever
    workers saw them (per worker it took up to 4 per worker)."""
    from tests.integration.harness import RawBackend
    from tests.integration.test_health import _answer

    bad = RawBackend(loop_thread, lambda r, w: _answer(502, r, w))
    good = Backend(loop_thread, "good")
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "bad", "address": bad.address},
                                                {"name": "good", "address": good.address}],
                      "passive": {"consecutive_errors": 4, "base_ejection": "60s", "max_ejected_percent": 50}}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    try:
        failures = 0
        while failures < 4:  # new connections: the kernel spreads them over both workers
            failures += loop_thread.run(fetch(port))[0] == 502
        wait_until(lambda: next(s for s in pyvs.status()["backends"][0]["servers"]
                                if s["name"] == "bad")["state"] == "DOWN", what="bad ejected after 4 failures")
    finally:
        pyvs.stop()
        bad.close()
        good.close()


def test_max_client_connections_holds_across_workers_and_a_dead_worker_frees_its_share(
        backends: list[Backend], tmp_path: Path, loop_thread: LoopThread, implementation: str) -> None:
    """Cap 2 with two workers: of 8 connections from one address (the kernel spreads
    them), exactly 2 are served; SIGKILL the workers and their share is given back."""
    import socket

    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b", "max_client_connections": 2}],
        "backends": [{"name": "b", "servers": [{"name": backends[0].name, "address": backends[0].address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    get = b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n"

    def served(c: socket.socket) -> bool:
        try:
            c.sendall(get)
            return c.recv(65536).startswith(b"HTTP/1.1 200 ")
        except ConnectionError:
            return False

    try:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
        assert sum(served(c) for c in conns) == 2
        wait_until(lambda: pyvs.status()["totals"]["client_cap_refused"] == 6, what="6 refusals counted")
        for w in pyvs.status()["workers"]:
            os.kill(w["pid"], signal.SIGKILL)  # whoever held the two connections dies
        for c in conns:
            c.close()
        wait_until(lambda: all(w["ready"] and w["pid"] for w in pyvs.status()["workers"]), what="workers back")

        def two_served() -> bool:
            fresh = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
            try:
                return all(served(c) for c in fresh)
            finally:
                for c in fresh:
                    c.close()

        wait_until(two_served, what="the dead workers' share given back")
    finally:
        pyvs.stop()

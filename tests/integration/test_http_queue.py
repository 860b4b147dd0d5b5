"""servers[].maxconn and the HTTP queue (pyvs/l7/queue.py), with two workers: the
server never has more requests than its maxconn, waiting requests go in arrival
order whatever worker took them, a full queue or a long wait answers 503.

The backend holds every request until the test releases it (no timing guesses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, free_port, read_head
from tests.integration.test_persist import fetch, wait_until


class Gated:
    """A server that records the order and concurrency of requests and answers each
    (``/q?id=N``) only when the test opens its gate."""

    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.order: list[int] = []
        self.inflight = 0
        self.most = 0
        self.gates: dict[int, asyncio.Event] = {}
        self.raw = RawBackend(lt, self.handle)

    def gate(self, i: int) -> asyncio.Event:
        return self.gates.setdefault(i, asyncio.Event())

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await read_head(r)
        i = int(head.split(b" ")[1].split(b"id=")[1])
        self.order.append(i)
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await self.gate(i).wait()
        finally:
            self.inflight -= 1
        body = f"ok {i}".encode()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await w.drain()

    def release(self, i: int) -> None:
        self.lt.loop.call_soon_threadsafe(self.gate(i).set)


@pytest.fixture()
def gated(loop_thread: LoopThread) -> Iterator[Gated]:
    g = Gated(loop_thread)
    yield g
    for i in list(g.gates):
        g.release(i)
    g.raw.close()


def start(tmp: Path, g: Gated, **queue: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": g.raw.address, "maxconn": 1}],
                      "queue": {"timeout": "20s", **queue}}],
    }
    return Pyvs(cfg, tmp, workers=2), port


def queued(pyvs: Pyvs) -> int:
    return int(pyvs.status()["shared"]["queued"]["b"])


def test_maxconn_one_serves_one_at_a_time_in_arrival_order(gated: Gated, tmp_path: Path,
                                                            loop_thread: LoopThread) -> None:
    pyvs, port = start(tmp_path, gated)
    try:
        futures = [asyncio.run_coroutine_threadsafe(fetch(port, path="/q?id=0"), loop_thread.loop)]
        wait_until(lambda: gated.order == [0], what="request 0 at the server")
        for i in range(1, 7):  # each on a new connection: the kernel spreads them over both workers
            futures.append(asyncio.run_coroutine_threadsafe(fetch(port, path=f"/q?id={i}"), loop_thread.loop))
            wait_until(lambda i=i: queued(pyvs) == i, what=f"{i} request(s) queued")  # type: ignore[misc]
        assert gated.order == [0]  # the server saw nothing more while request 0 was in flight
        for i in range(7):
            gated.release(i)
            wait_until(lambda i=i: len(gated.order) == min(i + 2, 7), what=f"request {i + 1} at the server")  # type: ignore[misc]
        replies = [f.result(20) for f in futures]
        assert [r[0] for r in replies] == [200] * 7
        assert [r[2] for r in replies] == [f"ok {i}".encode() for i in range(7)]
        assert gated.order == list(range(7))
        assert gated.most == 1
        assert queued(pyvs) == 0
        assert pyvs.status()["backends"][0]["servers"][0]["active"] == 0
        # Workers report every stats_interval: wait for the last report.
        wait_until(lambda: pyvs.status()["backends"][0]["queue"]["dequeued"] == 6, what="6 dequeued reported")
    finally:
        pyvs.stop()


def test_a_request_waiting_longer_than_queue_timeout_gets_503(gated: Gated, tmp_path: Path,
                                                              loop_thread: LoopThread) -> None:
    pyvs, port = start(tmp_path, gated, timeout="300ms")
    try:
        first = asyncio.run_coroutine_threadsafe(fetch(port, path="/q?id=0"), loop_thread.loop)
        wait_until(lambda: gated.order == [0], what="request 0 at the server")
        t0 = time.monotonic()
        status, _, _ = loop_thread.run(fetch(port, path="/q?id=1"))
        assert status == 503
        assert time.monotonic() - t0 >= 0.3
        gated.release(0)
        assert first.result(20)[0] == 200
        assert gated.order == [0]  # the timed-out request never reached the server
        wait_until(lambda: pyvs.status()["totals"]["queue_timeouts"] == 1, what="the timeout counted")
        assert queued(pyvs) == 0
    finally:
        pyvs.stop()


def test_a_full_queue_answers_503_at_once(gated: Gated, tmp_path: Path, loop_thread: LoopThread) -> None:
    pyvs, port = start(tmp_path, gated, size=1)
    try:
        first = asyncio.run_coroutine_threadsafe(fetch(port, path="/q?id=0"), loop_thread.loop)
        wait_until(lambda: gated.order == [0], what="request 0 at the server")
        second = asyncio.run_coroutine_threadsafe(fetch(port, path="/q?id=1"), loop_thread.loop)
        wait_until(lambda: queued(pyvs) == 1, what="request 1 queued")
        assert loop_thread.run(fetch(port, path="/q?id=2"))[0] == 503
        gated.release(0)
        gated.release(1)
        assert first.result(20)[0] == 200
        assert second.result(20)[0] == 200
        assert gated.order == [0, 1]
    finally:
        pyvs.stop()

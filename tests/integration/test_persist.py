"""Session persistence end to end: real pyvs processes (two workers), real backends,
curl's cookie jar and many clients with their own loopback source addresses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvs.persist.cookie import server_id
from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port

FAST = {"type": "tcp", "interval": "100ms", "timeout": "300ms", "rise": 1, "fall": 1, "jitter": 0.1}
Reply = tuple[int, list[tuple[str, str]], bytes]


def wait_until(pred: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def fetch(port: int, src: str = "127.0.0.1", path: str = "/name", headers: str = "") -> Reply:
    """One request on a new connection from source address ``src`` (any 127/8 address
    is ours on loopback): status, header fields, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [(n.strip().lower(), v.strip()) for n, _, v in (ln.partition(":") for ln in lines[1:])]
    return int(lines[0].split(" ")[1]), fields, body


async def gather(*coros: Any) -> None:
    """Run coroutines together inside the loop thread (``LoopThread.run`` takes one coroutine)."""
    await asyncio.gather(*coros)


def cookie_of(reply: Reply, name: str) -> str | None:
    for n, v in reply[1]:
        if n == "set-cookie" and v.startswith(name + "="):
            return v.split(";")[0]
    return None


def persist_stats(pyvs: Pyvs) -> dict[str, Any]:
    """Per-backend persistence counters summed over workers, by backend name."""
    return {b["name"]: b.get("persistence", {}) for b in pyvs.status()["backends"]}


@pytest.fixture()
def backends(loop_thread: LoopThread) -> Iterator[list[Backend]]:
    bs = [Backend(loop_thread, f"s{i}") for i in range(1, 4)]
    yield bs
    for b in bs:
        b.close()


def start(tmp: Path, backends: list[Backend], persistence: dict[str, Any], *, workers: int = 2,
          **extra: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "persistence": persistence,
                      "servers": [{"name": b.name, "address": b.address} for b in backends], **extra}],
    }
    return Pyvs(cfg, tmp, workers=workers), port


def test_cookie_insert_round_trip_with_curls_cookie_jar(backends: list[Backend], tmp_path: Path) -> None:
    pyvs, port = start(tmp_path, backends, {"type": "cookie", "name": "SERVERID", "httponly": True},
                       health=FAST)
    jar = tmp_path / "jar.txt"
    url = f"http://127.0.0.1:{port}/name"
    try:
        first = curl("-c", str(jar), "-b", str(jar), url).stdout.decode()
        assert first in ("s1", "s2", "s3")
        text = jar.read_text()
        assert "SERVERID" in text and server_id("b", first) in text and "#HttpOnly_" in text
        assert "127.0.0.1:" not in text.split("SERVERID", 1)[1]  # never an internal address
        for _ in range(8):
            assert curl("-c", str(jar), "-b", str(jar), url).stdout.decode() == first
        sticky = next(b for b in backends if b.name == first)
        assert all("SERVERID" not in h.get("Cookie", "") for h in sticky.seen_headers)  # indirect
        # The sticky server dies: the next request is redispatched (no error) and the jar follows.
        sticky.close()
        moved = curl("-c", str(jar), "-b", str(jar), "-w", " %{http_code}", url).stdout.decode()
        new, code = moved.split(" ")
        assert code == "200" and new != first and server_id("b", new) in jar.read_text()
        for _ in range(4):
            assert curl("-c", str(jar), "-b", str(jar), url).stdout.decode() == new
        st = pyvs.wait_status(lambda s: s["totals"]["redispatches"] >= 1)
        assert st["backends"][0]["persistence"]["redispatches"] >= 1
    finally:
        pyvs.stop()


def test_stickiness_of_50_clients_over_1000_requests(loop_thread: LoopThread, backends: list[Backend],
                                                      tmp_path: Path) -> None:
    """50 clients, each with its own source address, 1,000 requests per method and a
    new connection per request (so consecutive requests land on either worker);
    source persistence on one port and cookie persistence on another: every client
    sees exactly one server, and the clients are still spread over all servers."""
    src_port, cookie_port = free_port(), free_port()
    servers = [{"name": b.name, "address": b.address} for b in backends]
    cfg = {
        "listeners": [{"name": "src", "bind": [f"127.0.0.1:{src_port}"], "backend": "src"},
                      {"name": "ck", "bind": [f"127.0.0.1:{cookie_port}"], "backend": "ck"}],
        "backends": [{"name": "src", "persistence": {"type": "source", "timeout": "5m"}, "servers": servers},
                     {"name": "ck", "persistence": {"type": "cookie", "name": "SRV"}, "servers": servers}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    clients = [f"127.0.0.{i}" for i in range(2, 52)]
    cookies: dict[str, str] = {}
    seen: dict[tuple[str, str], set[bytes]] = {}

    async def one(kind: str, src: str) -> None:
        if kind == "src":
            reply = await fetch(src_port, src)
        else:
            reply = await fetch(cookie_port, src, headers=f"Cookie: {cookies[src]}\r\n" if src in cookies else "")
            cookies.setdefault(src, cookie_of(reply, "SRV") or "")
        assert reply[0] == 200, reply
        seen.setdefault((kind, src), set()).add(reply[2])

    async def client(kind: str, src: str, n: int) -> None:
        for _ in range(n):
            await one(kind, src)

    try:
        # First visits, all at once; then wait until both workers know every source entry
        # (the documented staleness bound is milliseconds; a human's next click is later).
        loop_thread.run(gather(*[one(k, c) for c in clients for k in ("src", "ck")]))
        pyvs.wait_status(lambda s: s["backends"][0].get("persistence", {}).get("entries", 0) >= 2 * len(clients))
        loop_thread.run(gather(*[client(k, c, 19) for c in clients for k in ("src", "ck")]), timeout=60)
        assert sum(len(v) for v in seen.values()) == 2 * len(clients)  # one server per client and kind
        for kind in ("src", "ck"):
            spread = [next(iter(v)) for (k, _), v in seen.items() if k == kind]
            assert {spread.count(s) for s in (b"s1", b"s2", b"s3")} <= set(range(10, 25)), spread
        st = pyvs.wait_status(lambda s: s["totals"]["requests"] >= 2000)
        assert st["totals"]["responses_2xx"] == 2000 and st["totals"]["redispatches"] == 0
        assert persist_stats(pyvs)["src"]["misses"] <= len(clients) + 2
    finally:
        pyvs.stop()


def test_source_redispatch_when_the_sticky_server_goes_down(loop_thread: LoopThread, backends: list[Backend],
                                                             tmp_path: Path) -> None:
    pyvs, port = start(tmp_path, backends, {"type": "source"}, health=FAST)
    src = "127.0.0.77"
    try:
        first = loop_thread.run(fetch(port, src))[2]
        assert all(loop_thread.run(fetch(port, src))[2] == first for _ in range(5))
        next(b for b in backends if b.name.encode() == first).close()
        replies = [loop_thread.run(fetch(port, src)) for _ in range(20)]
        assert [r[0] for r in replies] == [200] * 20  # refused connects are retried and re-stuck
        after = [r[2] for r in replies]
        assert first not in after and len(set(after[5:])) == 1  # both workers agree on the new server
        st = pyvs.wait_status(lambda s: s["totals"]["redispatches"] >= 1)
        assert st["persistence"]["tables"]["b"]["entries"] == 1
        wait_until(lambda: any(s.get("state") == "DOWN" for s in pyvs.status()["backends"][0]["servers"]),
                   what="health check marks the dead server DOWN")
        assert {loop_thread.run(fetch(port, src))[2] for _ in range(5)} == {after[-1]}
    finally:
        pyvs.stop()

"""End to end: curl and raw sockets -> pyvs (subprocess) -> real backend servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import (
    Backend,
    LoopThread,
    Pyvs,
    curl,
    free_port,
    pattern,
    raw_exchange,
)


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.lt = lt
        self.b1 = Backend(lt, "b1")
        self.b2 = Backend(lt, "b2")
        self.dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        self.ports = {name: free_port() for name in ("web", "trusted", "single", "dead", "retry", "slow", "zero")}
        cfg: dict[str, Any] = {
            "listeners": [
                {"name": "web", "bind": [self.addr("web")], "backend": "pair"},
                {
                    "name": "trusted",
                    "bind": [self.addr("trusted")],
                    "backend": "single",
                    "forwarded": {"trusted_proxies": ["127.0.0.0/8"], "forwarded": True, "via": True},
                },
                {"name": "single", "bind": [self.addr("single")], "backend": "single",
                 "timeouts": {"request": "1s", "client": "2s"}},
                {"name": "dead", "bind": [self.addr("dead")], "backend": "dead"},
                {"name": "retry", "bind": [self.addr("retry")], "backend": "retry"},
                {"name": "slow", "bind": [self.addr("slow")], "backend": "slow"},
                {"name": "zero", "bind": [self.addr("zero")], "backend": "zero"},
            ],
            "backends": [
                {"name": "pair", "servers": [{"name": "b1", "address": self.b1.address},
                                             {"name": "b2", "address": self.b2.address}]},
                {"name": "single", "servers": [{"name": "b1", "address": self.b1.address}]},
                {"name": "dead", "servers": [{"name": "d", "address": self.dead}], "retries": 1},
                {"name": "retry", "balance": "static-rr",
                 "servers": [{"name": "d", "address": self.dead}, {"name": "b2", "address": self.b2.address}]},
                {"name": "slow", "servers": [{"name": "b1", "address": self.b1.address}],
                 "timeouts": {"server": "300ms"}},
                {"name": "zero", "servers": [{"name": "b1", "address": self.b1.address, "weight": 0}]},
            ],
        }
        self.pyvs = Pyvs(cfg, tmp)

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def url(self, name: str, path: str) -> str:
        return f"http://{self.addr(name)}{path}"

    def close(self) -> None:
        self.pyvs.stop()
        self.b1.close()
        self.b2.close()


@pytest.fixture(scope="module")
def env(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("http"))
    yield e
    e.close()


def test_balances_round_robin_and_forwards_client_identity(env: Env) -> None:
    names = [curl(env.url("web", "/name")).stdout.decode() for _ in range(6)]
    assert sorted(names) == ["b1"] * 3 + ["b2"] * 3
    assert names[0] != names[1]
    out = curl(env.url("single", "/headers?x=1"), "-H", "Host: shop.example:81")
    h = json.loads(out.stdout)
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"] == "shop.example:81"
    assert h["Host"] == "shop.example:81"


def test_hop_by_hop_headers_are_removed(env: Env) -> None:
    out = curl(
        env.url("single", "/headers"),
        "-H", "Connection: keep-alive, X-Secret",
        "-H", "X-Secret: 1",
        "-H", "Keep-Alive: timeout=5",
        "-H", "TE: trailers",
        "-H", "Proxy-Authorization: Basic Zm9v",
        "-H", "X-Kept: yes",
    )
    h = {k.lower(): v for k, v in json.loads(out.stdout).items()}
    for gone in ("x-secret", "keep-alive", "te", "proxy-authorization"):
        assert gone not in h, gone
    assert h["x-kept"] == "yes"
    assert "connection" not in h or h["connection"].lower() == "keep-alive"


def test_untrusted_client_cannot_spoof_forwarded_headers(env: Env) -> None:
    out = curl(env.url("single", "/headers"), "-H", "X-Forwarded-For: 6.6.6.6", "-H", "Forwarded: for=6.6.6.6")
    h = json.loads(out.stdout)
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert "Forwarded" not in h


def test_trusted_proxy_chain_is_appended_and_forwarded_via_added(env: Env) -> None:
    out = curl(env.url("trusted", "/headers"), "-H", "X-Forwarded-For: 10.1.1.1", "-H", "Host: a.example")
    h = json.loads(out.stdout)
    assert h["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
    assert h["Forwarded"] == 'for=127.0.0.1;proto=http;host="a.example"'
    assert h["Via"] == "1.1 pyvs"


def test_keepalive_reuses_backend_connections(env: Env) -> None:
    before_peers = len(env.b1.peers)
    before = env.b1.requests
    urls = [env.url("single", f"/name?i={i}") for i in range(40)]
    for _ in range(5):  # five client connections, each with 40 keep-alive requests
        assert curl(*urls).returncode == 0
    assert env.b1.requests - before == 200
    # One worker: the backend connection is reused across requests and across clients.
    assert len(env.b1.peers) - before_peers <= 2
    st = env.pyvs.wait_status(lambda s: s["totals"]["requests"] >= 200)
    assert st["totals"]["reuse_ratio"] is not None and st["totals"]["reuse_ratio"] > 10


def test_large_bodies_both_ways_content_length(env: Env, tmp_path: Path) -> None:
    data = pattern(10 * 1024 * 1024)
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    out = curl(env.url("single", "/upload"), "--data-binary", f"@{f}", "-H", "Content-Type: application/x")
    assert json.loads(out.stdout) == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(), "server": "b1"}
    down = curl(env.url("single", f"/big?size={len(data)}"))
    assert down.returncode == 0
    assert hashlib.sha256(down.stdout).digest() == hashlib.sha256(data).digest()


def test_chunked_upload_and_download(env: Env, tmp_path: Path) -> None:
    data = pattern(3 * 1024 * 1024 + 17)
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    out = curl(env.url("single", "/upload"), "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{f}")
    assert json.loads(out.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    res = curl("-i", "--raw", env.url("single", f"/chunked?size={len(data)}"))
    head, _, _ = res.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    down = curl(env.url("single", f"/chunked?size={len(data)}"))
    assert down.returncode == 0 and down.stdout == data


def test_expect_100_continue(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "up.bin"
    f.write_bytes(pattern(2_000_000))
    out = curl("-v", env.url("single", "/upload"), "-H", "Expect: 100-continue", "--data-binary", f"@{f}")
    assert b"HTTP/1.1 100 Continue" in out.stderr
    assert json.loads(out.stdout)["length"] == 2_000_000


def test_pipelined_requests_are_answered_in_order(env: Env) -> None:
    reqs = b"".join(
        b"GET /name?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)
    ) + b"GET /name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(env.ports["web"], reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1][:2] for part in out.split(b"HTTP/1.1 200 OK")[1:]]
    # Round robin over b1/b2: strictly alternating in request order.
    assert bodies[0] != bodies[1] and bodies[0] == bodies[2] == bodies[4]


def test_head_204_304_framing_keeps_connection_usable(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.ports["single"]), timeout=5) as s:
        s.sendall(b"HEAD /big?size=12345 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_head(s)
        assert b"Content-Length: 12345" in head
        s.sendall(b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_head(s)
        assert head.startswith(b"HTTP/1.1 204")
        assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
        s.sendall(b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_head(s).startswith(b"HTTP/1.1 304")
        s.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_head(s)
        assert head.startswith(b"HTTP/1.1 200") and s.recv(100) == b"b1"


def _read_head(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(1)
        assert b, f"connection closed after {buf!r}"
        buf += b
    return buf


def test_backend_dies_mid_body_content_length(env: Env) -> None:
    res = curl(env.url("single", "/die"))
    assert res.returncode == 18  # CURLE_PARTIAL_FILE: the client knows the body is short
    assert len(res.stdout) < 1_000_000


def test_backend_dies_mid_body_chunked(env: Env) -> None:
    res = curl(env.url("single", "/die-chunked"))
    assert res.returncode in (18, 56)  # partial file / recv failure: never a clean end
    assert 0 < len(res.stdout) <= 100_000


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: good.example, evil.example\r\n\r\n",  # invalid Host
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ],
)
def test_malformed_request_gets_400_and_close(env: Env, raw: bytes) -> None:
    before = env.b1.requests
    out = raw_exchange(env.ports["single"], raw)
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    assert b"Connection: close" in out
    assert env.b1.requests == before  # nothing reached the server


def test_oversized_head_gets_431(env: Env) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    out = raw_exchange(env.ports["single"], raw)
    assert out.startswith(b"HTTP/1.1 431 ")


def test_slow_request_head_gets_408(env: Env) -> None:
    out = raw_exchange(env.ports["single"], b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 408 ")


def test_no_server_503_refused_502_timeout_504(env: Env) -> None:
    res = curl("-i", env.url("zero", "/name"))
    assert res.stdout.startswith(b"HTTP/1.1 503 ")
    res = curl("-i", env.url("dead", "/name"))
    assert res.stdout.startswith(b"HTTP/1.1 502 ")
    res = curl("-i", env.url("slow", "/slow?delay=3"))
    assert res.stdout.startswith(b"HTTP/1.1 504 ")


def test_failed_connect_is_retried_on_another_server(env: Env) -> None:
    codes = [curl("-o", "/dev/null", "-w", "%{http_code}", env.url("retry", "/name")).stdout for _ in range(10)]
    assert codes == [b"200"] * 10


def test_websocket_is_tunnelled(env: Env) -> None:
    async def go() -> list[str]:
        async with aiohttp.ClientSession() as s, s.ws_connect(env.url("single", "/ws")) as ws:
            got = []
            for i in range(3):
                await ws.send_str(f"hi{i}")
                msg = await ws.receive(timeout=5)
                got.append(msg.data)
            await ws.send_bytes(b"\x00\x01" * 50_000)
            msg = await ws.receive(timeout=5)
            got.append(str(len(msg.data)))
            return got

    assert env.lt.run(go()) == ["echo:hi0", "echo:hi1", "echo:hi2", "100000"]


def test_status_counts_requests_and_errors(env: Env) -> None:
    st = env.pyvs.wait_status(lambda s: s["totals"]["responses_5xx"] >= 3 and s["totals"]["bad_requests"] >= 1)
    servers = {s["name"]: s for b in st["backends"] for s in b["servers"] if b["name"] == "pair"}
    assert servers["b1"]["requests"] > 0 and servers["b2"]["requests"] > 0


async def _noop() -> None:
    await asyncio.sleep(0)

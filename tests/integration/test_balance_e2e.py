"""Scheduling algorithms through the real proxy: hashing sees the request, the
latency-aware ones get their measurements."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port


@pytest.fixture()
def three(loop_thread: LoopThread) -> Iterator[list[Backend]]:
    bs = [Backend(loop_thread, f"s{i}") for i in range(3)]
    yield bs
    for b in bs:
        b.close()


def run(tmp: Path, three: list[Backend], balance: str, **extra: str) -> tuple[Pyvs, str]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], "backend": "b"}],
        "backends": [{"name": "b", "balance": balance, **extra,
                      "servers": [{"name": b.name, "address": b.address} for b in three]}],
    }
    return Pyvs(cfg, tmp), f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("hash_type", ["map", "consistent", "maglev"])
def test_param_hash_is_sticky_per_key_and_spreads_keys(three: list[Backend], tmp_path: Path, hash_type: str) -> None:
    pyvs, base = run(tmp_path, three, "param(k)", hash_type=hash_type)
    try:
        seen: dict[int, set[bytes]] = {}
        for i in range(30):
            seen.setdefault(i % 10, set()).add(curl(f"{base}/name?k={i % 10}").stdout)
        assert all(len(v) == 1 for v in seen.values())  # the same key, the same server
        assert len(set().union(*seen.values())) >= 2  # ten keys do not all land on one server
    finally:
        pyvs.stop()


def test_uri_hash_is_sticky(three: list[Backend], tmp_path: Path) -> None:
    pyvs, base = run(tmp_path, three, "uri")
    try:
        assert len({curl(f"{base}/name").stdout for _ in range(6)}) == 1
    finally:
        pyvs.stop()


def test_header_hash_follows_the_header(three: list[Backend], tmp_path: Path) -> None:
    pyvs, base = run(tmp_path, three, "header(X-User)")
    try:
        for user in ("alice", "bob", "carol"):
            got = {curl("-H", f"X-User: {user}", base + "/name").stdout for _ in range(5)}
            assert len(got) == 1
    finally:
        pyvs.stop()


@pytest.mark.parametrize("balance", ["leastconn", "peak-ewma", "response-time", "p2c", "random"])
def test_dynamic_algorithms_serve_every_request(three: list[Backend], tmp_path: Path, balance: str) -> None:
    pyvs, base = run(tmp_path, three, balance)
    try:
        out = curl(*[base + "/name"] * 60)
        assert out.returncode == 0
        assert sum(b.requests for b in three) == 60
    finally:
        pyvs.stop()

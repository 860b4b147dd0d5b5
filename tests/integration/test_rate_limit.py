"""rate_limit (pyvs/l7/filters/ratelimit.py) end to end with two workers: the figure
holds for the instance, not per worker; 429 carries Retry-After; keys are separate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, free_port
from tests.integration.test_persist import fetch


@pytest.fixture()
def backend(loop_thread: LoopThread) -> Iterator[Backend]:
    b = Backend(loop_thread, "s1")
    yield b
    b.close()


def start(tmp: Path, b: Backend, **listener: Any) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "l", "bind": [f"127.0.0.1:{port}"], **listener}],
        "backends": [{"name": "b", "servers": [{"name": b.name, "address": b.address}]}],
    }
    return Pyvs(cfg, tmp, workers=2), port


def test_rate_and_burst_hold_across_two_workers(backend: Backend, tmp_path: Path, loop_thread: LoopThread) -> None:
    """50/s with a burst of 10, hammered for 3 s on new connections (both workers take
    them): admitted = 11 + 50 x elapsed, within 10%."""
    pyvs, port = start(tmp_path, backend, backend="b", rate_limit={"rate": "50/s", "burst": 10})
    try:
        async def hammer() -> tuple[list[int], float]:
            statuses: list[int] = []
            t0 = time.monotonic()

            async def client() -> None:
                while time.monotonic() - t0 < 3.0:
                    statuses.append((await fetch(port))[0])

            await asyncio.gather(*(client() for _ in range(6)))
            return statuses, time.monotonic() - t0

        statuses, elapsed = loop_thread.run(hammer())
        admitted = statuses.count(200)
        expected = 11 + 50 * elapsed
        assert set(statuses) <= {200, 429}
        assert statuses.count(429) > admitted  # the load was well over the rate
        assert abs(admitted - expected) <= 0.1 * expected, (admitted, expected)
        workers_used = [w["connections"] for w in pyvs.status()["workers"]]
        assert len(workers_used) == 2
        assert pyvs.status()["totals"]["rate_limited"] >= 0
    finally:
        pyvs.stop()


def test_refusal_says_when_to_come_back_and_keys_are_separate(backend: Backend, tmp_path: Path,
                                                              loop_thread: LoopThread) -> None:
    pyvs, port = start(tmp_path, backend, routes=[
        {"name": "api", "match": {"path_prefix": "/api/"}, "backend": "b",
         "rate_limit": {"key": "header(X-Key)", "rate": "1/m", "burst": 1}},
        {"backend": "b"},
    ])
    try:
        def get(path: str, key: str | None) -> tuple[int, dict[str, str]]:
            hdr = f"X-Key: {key}\r\n" if key else ""
            status, fields, _ = loop_thread.run(fetch(port, path=path, headers=hdr))
            return status, dict(fields)

        assert [get("/api/x", "alice")[0] for _ in range(2)] == [200, 200]  # rate 1/m, burst 1: two at once
        status, fields = get("/api/x", "alice")
        assert status == 429
        assert 1 <= int(fields["retry-after"]) <= 60
        assert fields["cache-control"] == "no-store"
        assert get("/api/x", "bob")[0] == 200  # another key has its own budget
        assert get("/api/x", None)[0] == 200  # no key: not limited (as nginx with an empty key)
        assert [get("/other", "alice")[0] for _ in range(3)] == [200] * 3  # another route: no limit
    finally:
        pyvs.stop()


def test_bad_rate_limit_config_names_the_key(tmp_path: Path) -> None:
    from pyvs.config.loader import ConfigError, load_text

    with pytest.raises(ConfigError) as err:
        load_text("listeners: [{name: l, bind: ['127.0.0.1:1'], backend: b, rate_limit: {rate: '5 per s'}}]\n"
                  "backends: [{name: b, servers: [{name: s, address: '127.0.0.1:2'}]}]\n", "t.yaml")
    assert "rate_limit" in str(err.value.problems) and "100/s" in str(err.value.problems)
    with pytest.raises(ConfigError) as err:
        load_text("listeners: [{name: l, bind: ['127.0.0.1:1'], backend: b, rate_limit: {rate: 5/s, key: ip}}]\n"
                  "backends: [{name: b, servers: [{name: s, address: '127.0.0.1:2'}]}]\n", "t.yaml")
    assert "client_ip, header(NAME) or cookie(NAME)" in str(err.value.problems)

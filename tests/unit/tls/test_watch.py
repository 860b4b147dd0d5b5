"""The supervisor's certificate watch (pyvs.tls.watch): a settled change reloads once,
the same file times are never tried twice, a later change is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyvs.tls.watch import watch, watched


def fake_config(path: Path, interval: float = 0.01) -> Any:
    server = SimpleNamespace(mtimes=((str(path), os.stat(path).st_mtime),))
    tls = SimpleNamespace(watch_interval=interval, server=server)
    return SimpleNamespace(listeners=[SimpleNamespace(tls=tls), SimpleNamespace(tls=None)])


def test_watched_files_and_interval(tmp_path: Path) -> None:
    f = tmp_path / "c.pem"
    f.write_text("x")
    files, interval = watched(fake_config(f, 0.5))
    assert list(files) == [str(f)] and interval == 0.5
    assert watched(fake_config(f, 0)) == ({}, 0.0)


async def test_a_change_reloads_once_and_a_refused_one_is_not_retried(tmp_path: Path) -> None:
    f = tmp_path / "c.pem"
    f.write_text("x")
    cfg = fake_config(f)
    calls: list[float] = []
    stop = False

    async def reload() -> dict[str, Any]:
        calls.append(os.stat(f).st_mtime)
        return {"ok": False}  # refused: the running config (and its file times) stay

    task = asyncio.create_task(watch(lambda: cfg, reload, lambda: stop))
    await asyncio.sleep(0.1)
    assert calls == []
    os.utime(f, (1_000_000, 1_000_000))
    for _ in range(200):
        if calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert calls == [1_000_000]  # once, not again for the same times
    os.utime(f, (2_000_000, 2_000_000))
    for _ in range(200):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == [1_000_000, 2_000_000]
    stop = True
    await asyncio.wait_for(task, 1)

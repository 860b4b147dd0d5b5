"""Certificate files watched by the supervisor: a change reloads the worker generation.

Theory of operation
-------------------
A listener's contexts are built while its configuration is loaded, in the
supervisor, before the workers fork. A new certificate therefore reaches the workers
the way a new configuration does: by a reload -- a new generation of workers on the
same listening sockets, the old one draining (pyvs/runtime/generations.py). No
connection is refused or cut, and the session-ticket keys stay (pyvs/tls/tickets.py).

:func:`watch` polls the modification times of every certificate, chain and key file
of the running configuration (``tls.watch_interval``, the smallest of the
listeners'; 0 everywhere: no polling). A change is acted on once the times have
stayed the same for one more interval -- a certificate and its key are seldom
written at the same instant -- and then :meth:`reload` runs, exactly as SIGHUP
would (the configuration file is read again too). A broken new file makes that
reload fail validation: the running generation keeps its certificates and the
reason is logged with the key it concerns; the same file times are not tried
again, the next change of a file is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("pyvs.tls")


def watched(cfg: Any) -> tuple[dict[str, float], float]:
    """The certificate files of ``cfg`` with the times they had when loaded, and the
    polling interval (0: nothing to watch)."""
    files: dict[str, float] = {}
    interval = 0.0
    for lst in cfg.listeners:
        tls = getattr(lst, "tls", None)
        if tls is None or not tls.watch_interval:
            continue
        interval = tls.watch_interval if not interval else min(interval, tls.watch_interval)
        files.update(tls.server.mtimes)
    return files, interval


def mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0  # gone: a change too (a reload then says why it cannot load)


async def watch(current: Callable[[], Any], reload: Callable[[], Awaitable[dict[str, Any]]],
                stopping: Callable[[], bool]) -> None:
    """Poll until ``stopping()``; ``current()`` is the running configuration."""
    tried: dict[str, float] = {}  # file times a reload was already attempted with
    pending: dict[str, float] | None = None
    while not stopping():
        cfg = current()
        files, interval = watched(cfg)
        await asyncio.sleep(interval or 5.0)
        if not files or stopping() or current() is not cfg:
            pending = None
            continue
        now = {p: mtime(p) for p in files}
        changed = [p for p, t in now.items() if t != tried.get(p, files[p])]
        if not changed:
            pending = None
            continue
        if pending != now:  # wait until the files have settled for one interval
            pending = now
            continue
        pending = None
        tried = now
        log.warning("certificate file(s) changed: %s; reloading", ", ".join(changed))
        result = await reload()
        if not result.get("ok"):
            log.error("the changed certificate(s) are not used; the running ones stay until the next change")

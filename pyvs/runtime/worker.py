"""A worker process: owns the data path for every listener.

Each worker binds its own listening sockets with SO_REUSEPORT, so the kernel spreads
new connections across workers without a shared accept lock. The worker talks to
the supervisor over one Unix socket: it reports ``ready`` once listening, then a
counters snapshot every ``stats_interval``. SIGTERM starts a graceful drain:
listeners close at once, idle client connections close, busy ones finish their
current exchange (up to ``global.grace``), then the process exits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from pyvs.config.schema import Config
from pyvs.l4.runtime import L4Runtime
from pyvs.l7.h1conn import H1Connection
from pyvs.l7.listener import ListenerRuntime
from pyvs.persist.policy import build as build_persistence
from pyvs.runtime.batch import WriteBatch
from pyvs.runtime.sockets import bind_socket
from pyvs.runtime.stats import WorkerStats
from pyvs.runtime.timers import Sweeper
from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.worker")


class WorkerRuntime:
    """Everything one worker holds: backends, listeners, counters, live connections."""

    def __init__(self, cfg: Config, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.index = index
        self.loop = loop
        self.stats = WorkerStats()
        self.connections: set[H1Connection] = set()
        self.sweeper = Sweeper(loop)
        self.batch = WriteBatch(loop)  # the L7 short paths write through it (see pyvs/runtime/batch.py)
        self.draining = False
        self.pid = os.getpid()
        self.request_ids = 0  # %{request_id}: pid and this counter
        self.backends = {b.name: BackendRuntime(b, seed=index) for b in cfg.backends}
        for b in self.backends.values():
            if b.cfg.persistence is not None:
                b.attach_persistence(build_persistence(b.cfg.persistence, b))
        self.listeners = [ListenerRuntime(lc, self.backends, self) for lc in cfg.listeners]
        self.servers: list[asyncio.Server] = []
        # Set by the channel code: sends one message to the supervisor.
        self.send: Callable[[dict[str, Any]], None] = lambda msg: None
        for b in self.backends.values():
            if b.persist is not None:  # stick tables learn through the supervisor channel
                b.persist.bind(loop, lambda msg: self.send(msg))

    def report_outlier(self, server: ServerState, reason: str) -> None:
        """Passive health: ``server`` failed too many live requests in a row."""
        self.send({"type": "outlier", "backend": server.backend.name, "server": server.name, "reason": reason})

    def on_message(self, msg: dict[str, Any]) -> None:
        """A message from the supervisor."""
        if msg.get("type") == "server":
            backend = self.backends.get(msg["backend"])
            server = backend.by_name.get(msg["server"]) if backend else None
            if backend is not None and server is not None:
                backend.apply(bool(msg["eligible"]), int(msg["weight"]), server)
        elif msg.get("type") == "stick":  # stick-table entries (pyvs/persist/hub.py)
            backend = self.backends.get(msg["backend"])
            if backend is not None and backend.persist is not None:
                backend.persist.on_sync(msg["entries"], self.loop.time())

    async def start(self) -> None:
        self.sweeper.start()
        self.l4 = L4Runtime.start(self)  # tcp/udp listeners of the user-space data plane
        for lst in self.listeners:
            if lst.cfg.mode != "http":
                continue
            for addr in lst.cfg.bind:
                sock = bind_socket(addr)
                server = await self.loop.create_server(
                    lambda lst=lst: H1Connection(lst), sock=sock, backlog=lst.cfg.backlog  # type: ignore[misc]
                )
                self.servers.append(server)

    def report(self) -> dict[str, Any]:
        return {
            "type": "stats",
            "worker": self.index,
            "pid": os.getpid(),
            "stats": self.stats.snapshot(),
            "connections": len(self.connections),
            "backends": [b.statistics() for b in self.backends.values()],
        }

    async def drain(self, grace: float) -> None:
        self.draining = True
        for server in self.servers:
            server.close()
        self.l4.stop_accepting()
        for f in list(self.connections):
            f.drain()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self.l4.drain(deadline)
        for f in list(self.connections):
            f.abort()
        for b in self.backends.values():
            b.close_idle()
        self.sweeper.stop()


async def _worker_main(cfg: Config, index: int, chan: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    rt = WorkerRuntime(cfg, index, loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    reader, writer = await asyncio.open_unix_connection(sock=chan)

    def send(msg: dict[str, Any]) -> None:
        if writer.is_closing():
            return  # the supervisor is gone (killed during a drain): nobody to tell
        writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    rt.send = send

    await rt.start()
    # Everything allocated so far (config, modules, runtime) lives as long as the
    # worker: move it out of the collector's sight, and collect young objects less
    # often -- the request path makes a few short-lived containers per request.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    send({"type": "ready", "worker": index, "pid": os.getpid()})

    async def ticker() -> None:
        while True:
            await asyncio.sleep(cfg.global_.stats_interval)
            send(rt.report())

    async def from_supervisor() -> None:
        while True:
            line = await reader.readline()
            if not line:
                break  # EOF: the supervisor died; do not linger as an orphan
            try:
                rt.on_message(json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.exception("bad message from the supervisor: %r", line[:200])
        stop.set()

    tasks = [asyncio.create_task(ticker()), asyncio.create_task(from_supervisor())]
    await stop.wait()
    await rt.drain(cfg.global_.grace)
    send(rt.report())
    for t in tasks:
        t.cancel()
    try:
        await asyncio.wait_for(writer.drain(), 1.0)
    except (OSError, TimeoutError):
        pass


def run_worker(cfg: Config, index: int, chan: socket.socket) -> int:
    """Entry point in the forked child. Returns the exit status."""
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    try:
        uvloop.run(_worker_main(cfg, index, chan))
    except Exception:
        log.exception("worker %d crashed", index)
        return 1
    return 0

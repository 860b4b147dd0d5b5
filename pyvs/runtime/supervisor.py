"""The supervisor: owns the config, forks workers, aggregates their counters.

Theory of operation
-------------------
``pyvs run`` validates the config, checks every listener address can be bound
(so "address in use" is reported before anything starts), forks
``global.workers`` workers and only then creates its own event loop (forking a
process that already runs an event loop is unsafe). The supervisor's loop runs the
demo servers, the admin API and one reader per worker channel. A worker that dies
unexpectedly is restarted; SIGTERM/SIGINT stop the workers gracefully (they drain
their connections) and then the supervisor exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pyvs.config.schema import Config
from pyvs.l4.kernel import start_kernel_dataplanes
from pyvs.runtime.sockets import bind_socket
from pyvs.runtime.stats import aggregate

log = logging.getLogger("pyvs")


@dataclass
class WorkerHandle:
    index: int
    pid: int
    chan: socket.socket
    ready: bool = False
    started: float = field(default_factory=time.time)
    restarts: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    writer: asyncio.StreamWriter | None = None

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


class Supervisor:
    def __init__(self, cfg: Config, source: str) -> None:
        self.cfg = cfg
        self.source = source
        self.nworkers = cfg.global_.workers or os.cpu_count() or 1
        self.workers: dict[int, WorkerHandle] = {}
        self.started = time.time()
        self.stopping = False
        self.held: list[socket.socket] = []
        self.all_ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.vrrp: Any = None  # pyvs.ha.runner.VrrpRunner when cfg.vrrp is set
        self.exit_code = 0  # 1 when a part the config asks for could not start (VRRP)
        self.kernel: Any = None  # kernel data planes (pyvs.l4.kernel), set when the loop starts
        from pyvs.health.manager import HealthManager

        self.health = HealthManager(cfg, self.broadcast)
        from pyvs.persist.hub import StickHub

        # Stick tables of this instance and their store (memory or Redis); None without any.
        self.persist = StickHub.create(cfg, self.broadcast)

    # ---------------------------------------------------------------- start
    def check_binds(self) -> None:
        """Bind every listener address once (SO_REUSEPORT) to fail early on conflicts."""
        for lst in self.cfg.listeners:
            if lst.mode != "http" and lst.dataplane != "userspace":
                continue  # the kernel forwards it; the address need not be local
            for addr in lst.bind:
                try:
                    if lst.mode == "udp":
                        # Not held: a bound UDP socket in the SO_REUSEPORT group would
                        # receive (and drop) its share of the datagrams.
                        bind_socket(addr, kind=socket.SOCK_DGRAM).close()
                    else:
                        self.held.append(bind_socket(addr))
                except OSError as exc:
                    raise SystemExit(f"pyvs: listener {lst.name!r} cannot bind {addr}: {exc.strerror}") from None

    def spawn(self, index: int) -> WorkerHandle:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            parent.close()
            for h in self.workers.values():
                h.chan.close()
            from pyvs.runtime.worker import run_worker

            code = 1
            try:
                code = run_worker(self.cfg, index, child)
            finally:
                os._exit(code)
        child.close()
        handle = WorkerHandle(index=index, pid=pid, chan=parent)
        old = self.workers.get(index)
        if old is not None:
            handle.restarts = old.restarts + 1
        self.workers[index] = handle
        return handle

    def run(self) -> int:
        import uvloop

        self.check_binds()
        for i in range(self.nworkers):
            self.spawn(i)
        try:
            uvloop.run(self._main())
        finally:
            for s in self.held:
                s.close()
        return self.exit_code

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        self.all_ready = asyncio.Event()
        def on_stop() -> None:
            self.stopping = True  # from now on an exiting worker is not restarted
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop)
        runners: list[Any] = []
        self.kernel = start_kernel_dataplanes(self.cfg)  # nftables/ipvs listeners (pyvs/l4/kernel.py)
        try:
            await self._serve(stop, runners)
        finally:
            self.kernel.stop()  # remove this instance's nftables tables / IPVS services, also on a crash

    async def _serve(self, stop: asyncio.Event, runners: list[Any]) -> None:
        if self.cfg.demo.servers:
            from pyvs.demo import start_demo_servers

            runners.append(await start_demo_servers(self.cfg.demo.servers))
        for h in list(self.workers.values()):
            self._watch(h)
        if self.cfg.admin.listen:
            from pyvs.admin.server import start_admin

            runners.append(await start_admin(self, self.cfg.admin.listen))
        self.health.start()
        if self.persist is not None:
            self.persist.start()
        try:
            assert self.all_ready is not None
            await asyncio.wait_for(self.all_ready.wait(), 15)
        except TimeoutError:
            log.error("workers did not become ready in 15 s")
        if self.cfg.vrrp:  # after the workers are ready: a new master must be able to serve
            from pyvs.ha.runner import HaError, start_vrrp

            try:
                self.vrrp = await start_vrrp(self.cfg, self.health)
            except (HaError, OSError) as exc:
                log.error("vrrp: %s", exc)
                self.exit_code = 1  # a service manager must see the failure, not a clean stop
                stop.set()
        self._banner()
        await stop.wait()
        if self.vrrp is not None:  # hand the virtual IPs over before draining, not after
            await self.vrrp.cleanup()
        log.info("stopping: draining workers (grace %.0fs)", self.cfg.global_.grace)
        await self.health.stop()
        await self._stop_workers()
        if self.persist is not None:
            await self.persist.stop()
        for r in runners:
            await r.cleanup()

    def _banner(self) -> None:
        lines = [f"pyvs {_version()} running from {self.source} with {self.nworkers} worker(s)"]
        for lst in self.cfg.listeners:
            for addr in lst.bind:
                lines.append(f"  listener {lst.name:<10} {lst.mode}  http://{addr}/")
        if self.cfg.admin.listen:
            lines.append(f"  admin                  http://{self.cfg.admin.listen}/status")
        lines.append(f"  try: curl -s http://{self.cfg.listeners[0].bind[0]}/" if self.cfg.listeners else "")
        print("\n".join(x for x in lines if x), flush=True)

    # ------------------------------------------------------------- workers
    def _watch(self, h: WorkerHandle) -> None:
        """Read the worker's channel and learn of its exit through a pidfd (uvloop
        keeps SIGCHLD for itself)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._read_channel(h))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        fd = os.pidfd_open(h.pid)

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._reap()

        loop.add_reader(fd, exited)

    async def _read_channel(self, h: WorkerHandle) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=h.chan)
        h.writer = writer
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                kind = msg.get("type")
                if kind == "ready":
                    h.ready = True
                    for m in self.health.snapshot():
                        h.send(m)
                    for m in self.persist.snapshot() if self.persist is not None else ():
                        h.send(m)
                    if all(w.ready for w in self.workers.values()) and self.all_ready is not None:
                        self.all_ready.set()
                elif kind == "stats":
                    h.report = msg
                elif kind == "outlier":
                    self.health.on_outlier(str(msg["backend"]), str(msg["server"]), str(msg.get("reason", "")))
                elif kind == "stick" and self.persist is not None:
                    self.persist.on_worker(msg)
        finally:
            writer.close()

    def broadcast(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` to every running worker (health and runtime changes), and to the
        kernel data planes, which rewrite their server maps on a server change."""
        for h in self.workers.values():
            if h.ready:
                h.send(msg)
        if self.kernel is not None and msg.get("type") == "server":
            self.kernel.on_server_message(msg)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for h in list(self.workers.values()):
                if h.pid == pid:
                    h.pid = 0
                    if not self.stopping:
                        code = os.waitstatus_to_exitcode(status)
                        log.error("worker %d (pid %d) exited with %s; restarting", h.index, pid, code)
                        self._watch(self.spawn(h.index))

    async def _stop_workers(self) -> None:
        self.stopping = True
        for h in self.workers.values():
            if h.pid:
                try:
                    os.kill(h.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.cfg.global_.grace + 5
        while any(h.pid for h in self.workers.values()) and time.monotonic() < deadline:
            self._reap()
            await asyncio.sleep(0.05)
        for h in self.workers.values():
            if h.pid:
                os.kill(h.pid, signal.SIGKILL)

    # -------------------------------------------------------------- status
    def vrrp_status(self) -> list[dict[str, Any]]:
        """Each VRRP instance: state, priority, master, tracking, counters (empty without vrrp)."""
        return self.vrrp.status() if self.vrrp is not None else []

    def status(self) -> dict[str, Any]:
        reports = [h.report for h in self.workers.values() if h.report]
        agg = aggregate(reports)
        health = self.health.statistics()
        # Before the first worker report, list the configured servers with no traffic yet.
        known = {b["name"] for b in agg["backends"]}
        for bc in self.cfg.backends:
            if bc.name not in known:
                agg["backends"].append({
                    "name": bc.name, "balance": bc.balance, "no_server": 0,
                    "servers": [{"name": sc.name, "address": sc.address, "weight": sc.weight, "requests": 0}
                                for sc in bc.servers],
                })
        for b in agg["backends"]:
            for s in b["servers"]:
                hs = health.get(b["name"], {}).get(s["name"])
                if hs is not None:
                    s["state"] = hs["state"]
                    s["health"] = hs
        return {
            "version": _version(),
            "pid": os.getpid(),
            "config": self.source,
            "uptime": round(time.time() - self.started, 1),
            "workers": [
                {
                    "index": h.index,
                    "pid": h.pid,
                    "ready": h.ready,
                    "restarts": h.restarts,
                    "connections": h.report.get("connections", 0),
                }
                for h in self.workers.values()
            ],
            "listeners": [
                {"name": lc.name, "mode": lc.mode, "bind": list(lc.bind)} for lc in self.cfg.listeners
            ],
            **agg,
            "vrrp": self.vrrp_status(),
            "kernel": self.kernel.statistics() if self.kernel is not None else [],
            "persistence": self.persist.statistics() if self.persist is not None else None,
        }


def _version() -> str:
    from pyvs import __version__

    return __version__

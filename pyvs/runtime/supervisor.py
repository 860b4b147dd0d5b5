"""The supervisor: owns the config, forks workers, aggregates their counters.

Theory of operation
-------------------
Start, in this order, so that a failure is found before anything serves:

1. Bind every address pyvs needs (listeners, admin, demo servers) once, before
   forking: "address in use" is reported while no process exists yet. A listener
   address on which a socket already listens is refused even when that socket set
   SO_REUSEPORT (another pyvs): joining it would silently share its connections.
2. Fork ``global.workers`` workers, then create the event loop (forking a process
   that already runs an event loop is unsafe). A worker asks the kernel to SIGTERM
   it when the supervisor dies (``PR_SET_PDEATHSIG``), so workers never outlive it.
3. In the loop: the kernel data planes, demo servers, admin API, health checks and
   stick-table hub start; only then are the workers told to open their listeners
   (a listener opens only once what it routes to is up). Once every worker reports
   ``ready``, VRRP starts (a new master must be able to serve) and the "running"
   banner is printed.

Reload (SIGHUP, ``POST /reload`` on the admin endpoint, ``pyvs reload``): the new
config is loaded and validated by the loader of ``pyvs check`` and refused, with
its reasons logged, if anything is wrong; the running config stays. Otherwise the
new addresses are bound, health state and stick tables are carried over
(:mod:`pyvs.runtime.reload`), and a new generation of workers is forked, worker
``i`` on the same listening sockets as the worker ``i`` it replaces (the supervisor
created them, one SO_REUSEPORT socket per address and slot: :class:`SlotSockets`).
Once every new worker is ready the old ones are sent SIGTERM: they stop accepting,
finish in-flight exchanges up to ``global.grace`` and exit. The sockets of removed
addresses close once the old workers are gone. A new generation that cannot start
is stopped and the old one keeps serving.

A start that fails at any step (:class:`StartError`) prints one line, stops
whatever already started, and ``pyvs run`` exits 1 with no process left behind.
A worker that exits or fails before it is ready fails the start; after the start
a worker that dies is restarted. Once stopping begins (SIGTERM/SIGINT, a failed
start, a crash of the loop) nothing is restarted: ``stopping`` is set before the
first await of every stop path. Each worker's exit is learnt from its own pidfd
and reaped by pid (never ``waitpid(-1)``, which would steal the children of
health-check or VRRP notify scripts).
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

from pyvs.accel import aggregate as accel_aggregate
from pyvs.config.schema import Config, parse_address
from pyvs.dns.stats import aggregate as dns_aggregate
from pyvs.dns.stats import worker_row as dns_worker_row
from pyvs.l4.kernel import start_kernel_dataplanes
from pyvs.logs.access import forward_reopen
from pyvs.logs.pageviews import merge_report
from pyvs.logs.pageviews import status as pageviews_status
from pyvs.runtime.generations import READY_TIMEOUT, Generations, all_exited, why
from pyvs.runtime.sockets import SlotSockets, bind_socket, refuse_if_listening, slot_addresses, udp_key
from pyvs.runtime.stats import aggregate
from pyvs.runtime.worker import die_with_parent, reset_signals, run_worker
from pyvs.tls.stats import aggregate as tls_aggregate

log = logging.getLogger("pyvs")

RESTART_DELAY = 1.0  # a worker that dies younger than this is restarted after this long


class StartError(Exception):
    """A part the config asks for could not start. ``str()`` is the one line
    ``pyvs run`` prints (without the ``pyvs: `` prefix)."""


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
    exited: asyncio.Event | None = None  # set once the process is reaped (created by _watch)
    exit_code: int | None = None
    failure: str | None = None  # why the worker could not open its listeners (its last word)
    channel_closed: bool = False
    generation: int = 0
    retired: bool = False  # replaced by a reload: drains and exits, never restarted
    shared: Any = None  # the SharedState of its generation (pyvs/shared/state.py)

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


class Supervisor(Generations):
    def __init__(self, cfg: Config, source: str) -> None:
        self.cfg = cfg
        self.source = source
        self.nworkers = cfg.global_.workers or os.cpu_count() or 1
        self.workers: dict[int, WorkerHandle] = {}
        self.started = time.time()
        self.stopping = False  # set first thing on every stop path: no restart from then on
        self.opened = False  # the workers have been told to open their listeners
        self.running = False  # the start is over (banner printed)
        self.failure: StartError | None = None
        self.stop_event: asyncio.Event | None = None
        self.slots = SlotSockets(self.nworkers)  # listening TCP sockets, one per address and worker slot
        self.retiring: list[WorkerHandle] = []  # old generations, draining after a reload
        self.reload_old: list[WorkerHandle] = []  # the generation a reload in progress replaces
        self.retired_reports: list[dict[str, Any]] = []  # last counters of workers gone (retired, crashed)
        self.generation = 0
        self.reloads = 0
        self.last_reload: dict[str, Any] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self.admin_sock: socket.socket | None = None
        self.all_ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.vrrp: Any = None  # pyvs.ha.runner.VrrpRunner when cfg.vrrp is set
        self.exit_code = 0  # 1 when a part the config asks for could not start
        self.kernel: Any = None  # kernel data planes (pyvs.l4.kernel), set when the loop starts
        from pyvs.health.manager import HealthManager

        self.health = HealthManager(cfg, self.broadcast)
        from pyvs.persist.hub import StickHub

        # Stick tables of this instance and their store (memory or Redis); None without any.
        self.persist = StickHub.create(cfg, self.broadcast)
        from pyvs.shared.state import SharedState

        # Counts, round-robin positions and stick tables every worker of the current
        # generation shares (created before the fork, so each worker maps it).
        self.shared = SharedState(cfg, self.nworkers)
        self.cache_paths: set[str] = set()  # every cache.path a generation used (removed at exit)
        self.pageviews: Any = None  # pyvs.logs.pageviews.PageViewStore, made by the first report with page views

    # ---------------------------------------------------------------- start
    def check_binds(self) -> None:
        """Bind every address pyvs will serve on once, before any process is forked,
        so a conflict is reported while there is nothing to clean up. The admin socket
        is bound and listening first (connections wait in its backlog until the API
        is up), so a listener on an overlapping wildcard address is refused here, not
        later in the workers. Listener sockets are held (bound, not listening) until
        exit; demo addresses are only probed (aiohttp binds them)."""
        if self.cfg.admin.listen:
            try:
                self.admin_sock = bind_socket(self.cfg.admin.listen, reuse_port=False)
                self.admin_sock.listen(128)
            except OSError as exc:
                raise StartError(f"admin cannot bind {self.cfg.admin.listen}: {why(exc)}") from None
        for demo in self.cfg.demo.servers:
            try:
                _probe(demo.listen, socket.SOCK_STREAM)
            except OSError as exc:
                raise StartError(f"demo server {demo.name!r} cannot bind {demo.listen}: {why(exc)}") from None
        problem = self._bind_listeners(self.cfg)
        if problem is not None:
            raise StartError(problem)

    def _bind_listeners(self, cfg: Config) -> str | None:
        """Create the slot sockets of every TCP and UDP address of ``cfg`` that has none
        yet. The reason of the first failure, or None."""
        for lst in cfg.listeners:
            if lst.mode != "http" and lst.dataplane != "userspace":
                continue  # the kernel forwards it; the address need not be local
            for addr in lst.bind:
                try:
                    if lst.mode in ("udp", "dns") and udp_key(addr) not in self.slots.by_addr:
                        self.slots.add(udp_key(addr))  # one per slot, read by that slot's worker
                    if lst.mode != "udp" and addr not in self.slots.by_addr:
                        refuse_if_listening(addr)
                        self.slots.add(addr)
                except OSError as exc:
                    return f"listener {lst.name!r} cannot bind {addr}: {why(exc)}"
        return None

    def spawn(self, index: int, cfg: Config | None = None) -> WorkerHandle:
        cfg = cfg or self.cfg
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        # Signals wait (blocked) across the fork: a child forked by the running loop
        # inherits the loop's Python-level handlers, and a SIGTERM handled by those
        # before reset_signals() would be lost, leaving a worker that ignores the stop.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                reset_signals()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGTERM ends us now
                die_with_parent(supervisor)
                parent.close()
                for h in [*self.workers.values(), *self.retiring]:
                    h.chan.close()
                mine = self.slots.for_slot(index, slot_addresses(cfg))
                ours = self.slots.inodes()
                keep = {id(x) for x in mine.values()}
                for s in [*self.slots.all(), *([self.admin_sock] if self.admin_sock else [])]:
                    if id(s) not in keep:
                        s.close()  # other slots' sockets, the admin's
                from pyvs.shared.state import attach

                for h in [*self.workers.values(), *self.retiring, *self.reload_old]:
                    if h.shared is not None and h.shared is not self.shared:
                        h.shared.close()  # another generation's memfd: not ours to keep
                attach(self.shared, index)
                code = run_worker(cfg, index, child, supervisor, mine, ours)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        handle = WorkerHandle(index=index, pid=pid, chan=parent, generation=self.generation, shared=self.shared)
        old = self.workers.get(index)
        if old is not None and old.generation == self.generation:
            handle.restarts = old.restarts + 1
        self.workers[index] = handle
        return handle

    def run(self) -> int:
        """Start, serve until told to stop, stop. Returns the exit status; a failed
        start prints its one line here."""
        import uvloop

        # SIGHUP waits for the loop's handler (a reload); before that it must not kill us.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # log reopen: forwarded to the workers once the loop runs
        try:
            try:
                from pyvs.runtime.privileges import check_can_switch, resolve

                problem = check_can_switch(resolve(self.cfg.global_.user, self.cfg.global_.group))
                if problem is not None:
                    raise StartError(problem)
                self.check_binds()
                self._prepare_caches()
                for i in range(self.nworkers):
                    self.spawn(i)
                uvloop.run(self._main())
            finally:
                self._kill_leftovers()
                self._remove_caches()
                self.slots.close()
                if self.admin_sock is not None:
                    self.admin_sock.close()
        except StartError as exc:
            print(f"pyvs: {exc}", file=sys.stderr, flush=True)
            return 1
        return self.exit_code

    def _prepare_caches(self) -> None:
        """The shared caches' directories (pyvs/accel/cache_files.py): each path must be
        a directory; roots left by instances no longer running go; this generation's
        sections are made (before the fork: the workers inherit them)."""
        from pyvs.shared.state import cache_sections

        sections = cache_sections(self.cfg)
        if not sections:
            return
        for where, section in sections:
            if not os.path.isdir(section.path):
                raise StartError(f"{where}.cache.path: {section.path} is not a directory")
        from pyvs.accel.cache_files import sweep_roots
        from pyvs.runtime.privileges import resolve

        self.cache_paths.update(section.path for _, section in sections)  # (removed at exit)
        sweep_roots({section.path for _, section in sections}, os.getpid())
        try:
            self.shared.open_caches(resolve(self.cfg.global_.user, self.cfg.global_.group))
        except ValueError as exc:
            raise StartError(str(exc)) from None

    def _remove_caches(self) -> None:
        """At exit: this instance's cache objects go, whatever config made them."""
        from pyvs.shared.state import cache_sections

        paths = {section.path for _, section in cache_sections(self.cfg)} | self.cache_paths
        if paths:
            from pyvs.accel.cache_files import remove_root

            remove_root(paths, os.getpid())

    def _kill_leftovers(self) -> None:
        """Last resort when the loop itself failed: no worker may outlive ``run()``."""
        for h in [*self.workers.values(), *self.retiring]:
            if h.pid:
                try:
                    os.kill(h.pid, signal.SIGKILL)
                    os.waitpid(h.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                h.pid = 0

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stop = self.stop_event = asyncio.Event()
        self.all_ready = asyncio.Event()

        def on_stop() -> None:
            self.stopping = True  # from now on an exiting worker is not restarted
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop)
        self._reload_lock = asyncio.Lock()

        def on_hup() -> None:
            if self.running and not self.stopping:
                self._spawn_task(self.reload(None))
            else:
                log.warning("SIGHUP: ignored while pyvs is %s", "stopping" if self.stopping else "starting")

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGUSR1, lambda: forward_reopen([h.pid for h in [
            *self.workers.values(), *self.retiring, *self.reload_old] if h.pid]))
        for h in list(self.workers.values()):
            self._watch(h)  # first: every worker exit from here on is seen
        runners: list[Any] = []
        try:
            try:
                self.kernel = start_kernel_dataplanes(self.cfg)  # nftables/ipvs listeners (pyvs/l4/kernel.py)
            except SystemExit as exc:  # it names what failed, as "pyvs: kernel data plane: ..."
                raise StartError(str(exc.code).removeprefix("pyvs: ")) from None
            await self._start(runners)
            if not stop.is_set():
                self.running = True
                self._banner()
                await stop.wait()
        except StartError as exc:
            self.failure = self.failure or exc
        finally:
            self.stopping = True  # before any await: a worker exiting now is not restarted
            try:
                await self._shutdown(runners)
            finally:
                if self.kernel is not None:
                    self.kernel.stop()  # remove this instance's nftables tables / IPVS services
        if self.failure is not None:
            raise self.failure

    async def _sweep_shared(self) -> None:
        """Expired stick-table and rate-limit entries leave the shared zone (a bounded
        slice per second, as the tables' own lookups remove what they meet)."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            self.shared.sweep()

    async def _start(self, runners: list[Any]) -> None:
        """Everything but the listeners, then the listeners, then VRRP."""
        if self.cfg.demo.servers:
            from pyvs.demo import start_demo_servers

            try:
                runners.append(await start_demo_servers(self.cfg.demo.servers))
            except OSError as exc:  # lost a race for the port since check_binds
                raise StartError(f"demo servers cannot start: {why(exc)}") from None
        if self.cfg.admin.listen:
            from pyvs.admin.server import start_admin

            try:
                runners.append(await start_admin(self, self.cfg.admin.listen, sock=self.admin_sock))
            except (OSError, ValueError) as exc:
                raise StartError(f"admin cannot start on {self.cfg.admin.listen}: {why(exc)}") from None
        self.health.start()
        from pyvs.tls.watch import watch  # changed certificate files reload (pyvs/tls/watch.py)

        self._spawn_task(watch(lambda: self.cfg, lambda: self.reload(None), lambda: self.stopping))
        if self.persist is not None:
            self.persist.start()
        self._spawn_task(self._sweep_shared())
        # What the listeners route to is up: let the workers open them.
        self.opened = True
        for h in self.workers.values():
            h.send({"type": "listen"})
        assert self.all_ready is not None and self.stop_event is not None
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(self.all_ready.wait()), asyncio.ensure_future(self.stop_event.wait())],
            timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED,
        )
        for t in pending:
            t.cancel()
        if self.stop_event.is_set():
            return  # stopped or failed while starting
        if not done:
            log.error("workers did not become ready in %.0f s", READY_TIMEOUT)
        if self.cfg.vrrp:  # after the workers are ready: a new master must be able to serve
            from pyvs.ha.runner import HaError, start_vrrp

            try:
                self.vrrp = await start_vrrp(self.cfg, self.health)
            except HaError as exc:
                raise StartError(str(exc)) from None
            except OSError as exc:
                raise StartError(f"vrrp: {why(exc)}") from None

    async def _shutdown(self, runners: list[Any]) -> None:
        """Stop in the reverse order of the start; the workers are stopped even if an
        earlier step fails."""
        try:
            if self.vrrp is not None:  # hand the virtual IPs over before draining, not after
                await self.vrrp.cleanup()
            if self.failure is None:
                log.info("stopping: draining workers (grace %.0fs)", self.cfg.global_.grace)
            await self.health.stop()
        finally:
            await self._stop_workers()
        if self.persist is not None:
            await self.persist.stop()
        for r in runners:
            await r.cleanup()

    def _fail(self, why: str) -> None:
        """Fail the start (the first reason wins) and begin stopping."""
        if self.failure is None and not self.stopping:
            self.failure = StartError(why)
        self.stopping = True
        if self.stop_event is not None:
            self.stop_event.set()

    def _banner(self) -> None:
        lines = [f"pyvs {_version()} running from {self.source} with {self.nworkers} worker(s)"]
        for lst in self.cfg.listeners:
            for addr in lst.bind:
                scheme = "https" if getattr(lst, "tls", None) is not None else "http"
                lines.append(f"  listener {lst.name:<10} {lst.mode}  {scheme}://{addr}/")
        if self.cfg.admin.listen:
            lines.append(f"  admin                  http://{self.cfg.admin.listen}/status")
        lines.append(f"  try: curl -s http://{self.cfg.listeners[0].bind[0]}/" if self.cfg.listeners else "")
        print("\n".join(x for x in lines if x), flush=True)

    # ------------------------------------------------------------- workers
    def _watch(self, h: WorkerHandle) -> None:
        """Read the worker's channel and learn of its exit through a pidfd (uvloop
        keeps SIGCHLD for itself)."""
        loop = asyncio.get_running_loop()
        h.exited = asyncio.Event()
        task = loop.create_task(self._read_channel(h))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        fd = os.pidfd_open(h.pid)

        def exited() -> None:
            try:
                pid, status = os.waitpid(h.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already (cannot happen: only we reap it)
                pid, status = h.pid, 0
            if pid == 0:
                return  # spurious wake-up
            loop.remove_reader(fd)
            os.close(fd)
            self._on_exit(h, os.waitstatus_to_exitcode(status))

        loop.add_reader(fd, exited)

    def _on_exit(self, h: WorkerHandle, code: int) -> None:
        pid, h.pid, h.exit_code = h.pid, 0, code
        if h.shared is not None:  # nothing of it can change any more: give back its counts
            given = h.shared.owner_died(h.index)
            if given:
                log.info("worker %d (pid %d) held %d request(s) in flight; counts given back", h.index, pid, given)
        assert h.exited is not None
        h.exited.set()
        if h.retired:
            if h in self.retiring:
                self.retiring.remove(h)
            log.info("worker %d (pid %d) of generation %d exited with %s after the reload",
                     h.index, pid, h.generation, code)
            return
        if self.stopping or self.workers.get(h.index) is not h:
            return
        if not self.running:
            self._start_failed(h)
            return
        delay = RESTART_DELAY if time.time() - h.started < RESTART_DELAY else 0.0
        log.error("worker %d (pid %d) exited with %s; restarting%s", h.index, pid, code,
                  f" in {delay:.0f}s" if delay else "")
        asyncio.get_running_loop().call_later(delay, self._restart, h)

    def _restart(self, h: WorkerHandle) -> None:
        if not self.stopping and self.workers.get(h.index) is h:
            self._watch(self.spawn(h.index))

    def _start_failed(self, h: WorkerHandle) -> None:
        """A worker died before the start was over: fail the start, with the reason
        the worker sent if it sent one (hence wait for both its exit and its EOF)."""
        if h.pid or not h.channel_closed or self.stopping:
            return
        self._fail(h.failure or f"worker {h.index} exited with {h.exit_code} before it was ready")

    async def _read_channel(self, h: WorkerHandle) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=h.chan)
        h.writer = writer
        if self.opened:  # a worker restarted after the start opens its listeners at once
            h.send({"type": "listen"})
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
                elif kind == "failed":
                    h.failure = str(msg.get("error", "failed"))
                    if self.running:
                        log.error("%s", h.failure)
                elif kind == "stats":
                    if msg.get("pageviews"):  # deltas since the worker's last report: added up once
                        self.pageviews = merge_report(self.pageviews, self.cfg.pageviews.top if self.cfg.pageviews
                                                      else 20, msg.pop("pageviews"))
                    h.report = msg
                elif kind == "outlier":
                    self.health.on_outlier(str(msg["backend"]), str(msg["server"]), str(msg.get("reason", "")))
                elif kind == "stick" and self.persist is not None:
                    self.persist.on_worker(msg)
        finally:
            writer.close()
            h.channel_closed = True
            if h.report:  # retired, crashed or stopped: its counts stay in the sums (counters never go back)
                self.retired_reports.append(h.report)
            if not self.running and self.workers.get(h.index) is h:
                self._start_failed(h)

    def broadcast(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` to every running worker (health and runtime changes), and to the
        kernel data planes, which rewrite their server maps on a server change."""
        for h in self.workers.values():
            if h.ready:
                h.send(msg)
        if self.kernel is not None and msg.get("type") == "server":
            self.kernel.on_server_message(msg)

    async def _stop_workers(self) -> None:
        """SIGTERM every worker (they drain for up to ``grace``), SIGKILL those still
        there 5 s after that, and return once all are reaped."""
        self.stopping = True
        live = [h for h in [*self.workers.values(), *self.retiring] if h.pid]
        for h in live:
            try:
                os.kill(h.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not await all_exited(live, self.cfg.global_.grace + 5):
            for h in live:
                if h.pid:
                    log.error("worker %d (pid %d) did not stop in time; killing it", h.index, h.pid)
                    os.kill(h.pid, signal.SIGKILL)
            await all_exited(live, 5)

    # -------------------------------------------------------------- reload
    async def reload(self, path: str | None, config: Config | None = None) -> dict[str, Any]:
        from pyvs.tls.client import of_config, publish

        result = await super().reload(path, config)  # config: the admin API's runtime changes
        publish(of_config(self.cfg))  # health checks: the running servers' TLS only (pyvs/tls/client.py)
        return result

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retired_reports(self) -> list[dict[str, Any]]:
        """Counters of retired workers, restricted to backends still configured: the last
        report of each that has exited, and the latest of each still draining (or still
        serving while a reload starts the next generation). Without the draining ones,
        every counter would drop for the length of a drain after a reload and come back
        when the old workers exit, which Prometheus reads as a reset and a spike."""
        names = {b.name for b in self.cfg.backends}
        draining = [h.report for h in [*self.retiring, *self.reload_old] if h.report and not h.channel_closed]
        return [{**r, "backends": [b for b in r.get("backends", []) if b.get("name") in names]}
                for r in [*self.retired_reports, *draining]]

    # -------------------------------------------------------------- status
    def vrrp_status(self) -> list[dict[str, Any]]:
        """Each VRRP instance: state, priority, master, tracking, counters (empty without vrrp)."""
        return self.vrrp.status() if self.vrrp is not None else []

    def status(self) -> dict[str, Any]:
        live = [h.report for h in self.workers.values() if h.report and not h.channel_closed]
        reports = live + self._retired_reports()
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
                # In flight now: the shared zone's instance-wide count where it keeps one
                # (pyvs/shared/state.py counted), else the sum of the workers' reports.
                shared = self.shared.active(b["name"], s["name"])
                if shared is not None:
                    s["active"] = shared
                hs = health.get(b["name"], {}).get(s["name"])
                if hs is not None:
                    s["state"] = hs["state"]
                    s["health"] = hs
        return {
            "version": _version(),
            "pid": os.getpid(),
            "config": self.source,
            "uptime": round(time.time() - self.started, 1),
            "generation": self.generation,
            "shared": self.shared.statistics(),
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "retiring": [{"index": h.index, "pid": h.pid, "generation": h.generation}
                         for h in self.retiring if h.pid],
            "workers": [
                {
                    "index": h.index,
                    "pid": h.pid,
                    "ready": h.ready,
                    "restarts": h.restarts,
                    "generation": h.generation,
                    "connections": h.report.get("connections", 0),
                    **({"cache_hits": sum(c.get("hits", 0) for c in h.report["accel"]["caches"].values())}
                       if h.report.get("accel", {}).get("caches") else {}),
                    **dns_worker_row(h.report),  # "dns_queries" with dns listeners (pyvs/dns/stats.py)
                }
                for h in self.workers.values()
            ],
            "listeners": [
                {"name": lc.name, "mode": lc.mode, "bind": list(lc.bind),
                 **({"tls": lc.tls.server.statistics()} if lc.tls is not None else {})} for lc in self.cfg.listeners
            ],
            **agg,
            **accel_aggregate(reports),  # "caches", "compression" (pyvs/accel)
            **tls_aggregate(reports, self.cfg.listeners),  # "tls" with TLS listeners (pyvs/tls/stats.py)
            **dns_aggregate(reports, live or [h.report for h in [*self.reload_old, *self.retiring]
                                              if h.report and not h.channel_closed],
                            self.cfg.listeners),  # "dns" with dns listeners (pyvs/dns/stats.py)
            "vrrp": self.vrrp_status(),
            "kernel": self.kernel.statistics() if self.kernel is not None else [],
            "persistence": self.persist.statistics() if self.persist is not None else None,
            "pageviews": pageviews_status(self.pageviews),
        }


def _probe(address: str, kind: int) -> None:
    """Bind ``address`` without SO_REUSEPORT and let go: fails when anyone holds it.
    TCP keeps SO_REUSEADDR, so connections of a previous run in TIME_WAIT do not count."""
    host, port = parse_address(address)
    family, stype, proto, _, sockaddr = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, stype, proto) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(sockaddr)


def _version() -> str:
    from pyvs import __version__

    return __version__

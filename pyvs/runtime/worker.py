"""A worker process: owns the data path for every listener.

Worker slot ``i`` inherits its TCP listening sockets from the supervisor (one
SO_REUSEPORT socket per address and slot, :class:`pyvs.runtime.sockets.SlotSockets`),
so the kernel spreads new connections across workers without a shared accept lock,
and a reload starts the next generation of slot ``i`` on the same sockets. UDP
sockets are bound by each worker. The worker talks to
the supervisor over one Unix socket: it opens its listeners when the supervisor
says ``listen`` (once what they route to is up), reports ``ready`` once listening
(or ``failed`` with the reason, then exits 1), then a counters snapshot every
``stats_interval``. SIGTERM starts a graceful drain: listeners close at once (the
listening sockets themselves stay open in the supervisor and the next generation),
busy client connections finish their current exchange (up to ``global.grace``),
idle keep-alive connections get ``DRAIN_IDLE_WAIT`` for a request already on its way
before they close, then the process exits.

A worker never outlives its supervisor: the kernel sends it SIGTERM when the
supervisor dies (``PR_SET_PDEATHSIG``), and EOF on the channel means the same. An
orphaned worker closes its listeners at once, gives in-flight exchanges
``ORPHAN_GRACE`` and is gone within ``ORPHAN_DEADLINE`` whatever happens.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pyvs.accel import report as accel_report
from pyvs.config.schema import Config
from pyvs.dns import start_dns
from pyvs.dns.stats import report as dns_report
from pyvs.h2.settings import serves_h2
from pyvs.l4.runtime import L4Runtime
from pyvs.l7.h1conn import H1Connection
from pyvs.l7.listener import ListenerRuntime
from pyvs.l7.queue import BackendQueue
from pyvs.logs.access import build as build_access_logs
from pyvs.persist.policy import build as build_persistence
from pyvs.runtime.batch import WriteBatch
from pyvs.runtime.privileges import drop as drop_privileges
from pyvs.runtime.privileges import resolve as resolve_identity
from pyvs.runtime.sockets import bind_socket, refuse_if_listening, udp_key
from pyvs.runtime.stats import WorkerStats
from pyvs.runtime.timers import Sweeper
from pyvs.shared.state import SharedState
from pyvs.shared.state import current as current_shared
from pyvs.tls.stats import report as tls_report
from pyvs.upstream.server import BackendRuntime, ServerState

if TYPE_CHECKING:
    from pyvs.h2.conn import H2ServerConnection
    from pyvs.h2.pool import H2Pool

log = logging.getLogger("pyvs.worker")


class WorkerRuntime:
    """Everything one worker holds: backends, listeners, counters, live connections."""

    def __init__(self, cfg: Config, index: int, loop: asyncio.AbstractEventLoop,
                 socks: dict[str, socket.socket] | None = None, ours: frozenset[int] = frozenset()) -> None:
        self.cfg = cfg
        self.index = index
        self.socks = socks or {}  # inherited listening sockets of this slot, by address
        self.ours = ours  # inodes of every listening socket of this instance (all slots)
        self.loop = loop
        self.stats = WorkerStats()
        self.connections: set[H1Connection | H2ServerConnection] = set()
        self.sweeper = Sweeper(loop)
        self.batch = WriteBatch(loop)  # the L7 short paths write through it (see pyvs/runtime/batch.py)
        self.draining = False
        self.pid = os.getpid()
        self.request_ids = 0  # %{request_id}: pid and this counter
        self.backends = {b.name: BackendRuntime(b, seed=index) for b in cfg.backends}
        # Servers with proto h2/h2c: their HTTP/2 connection (pyvs/h2/pool.py); empty without any.
        self.h2_pools: dict[ServerState, H2Pool] = {}
        if any(s.proto != "http1" for b in cfg.backends for s in b.servers):
            from pyvs.h2.pool import build_pools

            self.h2_pools = build_pools(self)
        self.shared_state = current_shared()  # the generation's shared zone (None outside a supervisor)
        if self.shared_state is None:  # not forked by a supervisor (tests): a zone of our own
            self.shared_state = SharedState(cfg, 1)
            self.shared_state.owner = 0
        for b in self.backends.values():
            b.attach_shared(self.shared_state)
            if b.limited:  # a server has a maxconn: requests wait in the instance's queue
                b.queue = BackendQueue(b, loop, b.cfg.queue, self.shared_state)
        for b in self.backends.values():
            if b.cfg.persistence is not None:
                b.attach_persistence(build_persistence(b.cfg.persistence, b))
        self.listeners = [ListenerRuntime(lc, self.backends, self) for lc in cfg.listeners]
        self.servers: list[asyncio.Server] = []
        # Access logs and page views (pyvs/logs): an observer per HTTP listener that has either.
        self.access_logs, self.pageviews, self.observers = build_access_logs(cfg, loop)
        self.dns: Any = None  # pyvs.dns.responder.DnsRuntime when the config has dns listeners
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
                if self.dns is not None:
                    self.dns.changed()  # precomputed DNS answers follow health (pyvs/dns)
        elif msg.get("type") == "stick":  # stick-table entries (pyvs/persist/hub.py)
            backend = self.backends.get(msg["backend"])
            if backend is not None and backend.persist is not None:
                backend.persist.on_sync(msg["entries"], self.loop.time())
        elif msg.get("type") == "cache_purge":  # admin API: drop a URL or prefix (pyvs/accel)
            from pyvs.accel import purge

            purge(msg)
        elif msg.get("type") == "stick_clear":  # admin API: stick table cleared (pyvs/admin/actions.py)
            backend = self.backends.get(msg["backend"])
            table = getattr(backend.persist, "table", None) if backend is not None else None
            if table is not None:
                table.clear()
            shared = getattr(backend.persist, "shared", None) if backend is not None else None
            if shared is not None:  # the generation's shared table (pyvs/persist/shared_table.py)
                shared.clear()

    def udp_socket(self, addr: str) -> socket.socket:
        """The UDP socket to read for ``addr``: this slot's, inherited from the supervisor
        (the next generation's worker reads the same one), else a new one."""
        sock = self.socks.pop(udp_key(addr), None)
        return sock if sock is not None else bind_socket(addr, kind=socket.SOCK_DGRAM)

    def listen_socket(self, addr: str) -> socket.socket:
        """The TCP socket to accept on for ``addr``: the one inherited from the supervisor
        (a copy: closing it leaves the socket to the next generation), else a new one."""
        sock = self.socks.pop(addr, None)
        if sock is None:
            return bind_socket(addr)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # First listen() on it: a socket that started listening on the port since the
            # supervisor bound it (not one of ours) is a conflict the bind did not see.
            refuse_if_listening(addr, self.ours)
        return sock

    async def start(self) -> None:
        self.access_logs.start()  # OSError: a log file that cannot be opened fails the start
        self.sweeper.start()
        self.l4 = L4Runtime.start(self)  # tcp/udp listeners of the user-space data plane
        self.dns = await start_dns(self)  # mode dns listeners (pyvs/dns), None without any
        for lst in self.listeners:
            if lst.cfg.mode != "http":
                continue
            for addr in lst.cfg.bind:
                try:
                    sock = self.listen_socket(addr)
                    tls = lst.tls  # TLS termination: contexts built by the supervisor (pyvs/tls)
                    h2 = None
                    if serves_h2(lst.cfg):  # HTTP/2 (pyvs/h2): imported only for such listeners
                        from pyvs.h2.detect import protocol_factory

                        h2 = protocol_factory(lst)
                    factory: Any = (h2 if h2 is not None else (lambda lst=lst: H1Connection(lst)) if tls is None
                                    else (lambda lst=lst, tls=tls: tls.protocol(lst)))
                    ctx = None
                    if tls is not None:  # TLS around each protocol (pyvs/tls/transport.py), not by ssl=
                        factory, ctx = tls.serve(factory, self.loop)  # (ctx: uvloop's own TLS, the fallback)
                    server = await self.loop.create_server(
                        factory, sock=sock, backlog=lst.cfg.backlog, ssl=ctx,
                        ssl_handshake_timeout=tls.handshake_timeout if ctx is not None and tls is not None else None)
                except OSError as exc:  # the supervisor prints this as the reason of a failed start
                    raise OSError(exc.errno, f"listener {lst.cfg.name!r} cannot bind {addr}: {exc.strerror}") from None
                self.servers.append(server)

    def report(self) -> dict[str, Any]:
        self.stats.access_log_lines, self.stats.access_log_dropped = self.access_logs.counts()
        return {
            "type": "stats",
            "worker": self.index,
            "pid": os.getpid(),
            "stats": self.stats.snapshot(),
            "connections": len(self.connections),
            "backends": [b.statistics() for b in self.backends.values()],
            "traffic": self.stats.traffic_report(),  # latency, status classes, bytes (pyvs/runtime/stats.py)
            "pageviews": self.pageviews.take() if self.pageviews is not None else None,
            "accel": accel_report(self.cfg),  # cache and compression counters ({} without them)
            "tls": tls_report(self.listeners),  # handshakes, failures... per TLS listener (None without any)
            "dns": dns_report(self.dns),  # queries, rcodes, qtypes... per dns listener (None without any)
        }

    async def drain(self, grace: float) -> None:
        self.draining = True
        for server in self.servers:
            server.close()
        self.l4.stop_accepting()
        if self.dns is not None:
            self.dns.close()
        deadline = self.loop.time() + grace
        # A connection closes only once it has answered a response that said
        # "Connection: close" (``close_after``; new connections get it from ``draining``)
        # or has been idle for DRAIN_IDLE_WAIT: closing a keep-alive connection at any
        # other moment can cross a request already on its way, which the client would
        # see as a reset. A response already under way (its head may have promised
        # keep-alive) is left to finish; the connection is handled when it comes back idle.
        idle_since: dict[H1Connection | H2ServerConnection, float] = {}
        while self.connections and self.loop.time() < deadline:
            now = self.loop.time()
            for f in list(self.connections):
                ex = f.ex
                if ex is None:  # HTTP/2 (pyvs/h2): GOAWAY now; it closes when its streams are done
                    f.drain()
                    continue
                if ex.resp_started:
                    idle_since.pop(f, None)
                    continue
                f.close_after = True
                if ex.head is None and ex.up is None and not f.inbuf:  # (inbuf: a head on its way)
                    if now - idle_since.setdefault(f, now) >= DRAIN_IDLE_WAIT:
                        f.drain()  # idle: closes it now
                else:
                    idle_since.pop(f, None)
            await asyncio.sleep(0.02)
        await self.l4.drain(deadline)
        for f in list(self.connections):
            f.abort()
        for b in self.backends.values():
            b.close_idle()
        for pool in self.h2_pools.values():
            pool.close()
        self.sweeper.stop()


DRAIN_IDLE_WAIT = 0.5  # s an idle keep-alive connection stays open once draining starts


ORPHAN_GRACE = 0.5  # what in-flight exchanges get once the supervisor is gone
ORPHAN_DEADLINE = 1  # s; then SIGALRM's default action ends the process, whatever it is doing
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(supervisor: int) -> None:
    """In the forked child, first thing: have the kernel SIGTERM this worker when the
    supervisor dies, however it dies (SIGKILL and the OOM killer included), so a worker
    never serves on as an orphan. The signal goes when the forking *thread* ends; the
    supervisor forks from its main thread. If the supervisor died before the request
    took effect there will be no signal, hence the check of the parent's pid after it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != supervisor:
        os._exit(1)


def reset_signals() -> None:
    """In the forked child: forget the supervisor's signal handlers. A worker restarted
    by a running supervisor inherits its loop's Python-level handlers and wake-up fd;
    a SIGTERM arriving before the worker's own loop is up would then be swallowed (and
    reported to the supervisor's loop). With the defaults it simply ends the worker."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if callable(handler):
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reload is the supervisor's business
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # log reopen: handled once the loop runs


async def _worker_main(cfg: Config, index: int, chan: socket.socket, supervisor: int,
                       socks: dict[str, socket.socket], ours: frozenset[int]) -> int:
    """Wait for the supervisor's word to open the listeners (what they route to is up
    by then), serve, drain on SIGTERM. Returns the exit status."""
    loop = asyncio.get_running_loop()
    rt = WorkerRuntime(cfg, index, loop, socks, ours)
    stop = asyncio.Event()
    go = asyncio.Event()
    orphaned = False

    def on_sigterm() -> None:
        nonlocal orphaned
        orphaned = orphaned or os.getppid() != supervisor  # PR_SET_PDEATHSIG, not a stop
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    loop.add_signal_handler(signal.SIGUSR1, rt.access_logs.reopen)  # forwarded by the supervisor (logrotate)
    reader, writer = await asyncio.open_unix_connection(sock=chan)

    def send(msg: dict[str, Any]) -> None:
        if writer.is_closing():
            return  # the supervisor is gone (killed during a drain): nobody to tell
        writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    rt.send = send

    async def from_supervisor() -> None:
        nonlocal orphaned
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break  # EOF: the supervisor died; do not linger as an orphan
                try:
                    msg = json.loads(line)
                    if msg.get("type") == "listen":
                        go.set()
                    else:
                        rt.on_message(msg)
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.exception("bad message from the supervisor: %r", line[:200])
        except ConnectionError:
            pass
        orphaned = True
        stop.set()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(cfg.global_.stats_interval)
            send(rt.report())

    tasks = [asyncio.create_task(from_supervisor())]
    started = False
    await _first(go.wait(), stop.wait())
    if not stop.is_set():
        try:
            await rt.start()
        except OSError as exc:
            # One line for the supervisor to print; it fails the start (or logs it).
            send({"type": "failed", "worker": index, "error": f"worker {index}: {exc.strerror or exc}"})
            await _flush(writer)
            return 1
        started = True
        # Listeners are open: give up root (global.user), then ask again for the
        # parent-death signal, which the kernel clears on a change of credentials.
        drop_privileges(resolve_identity(cfg.global_.user, cfg.global_.group))
        die_with_parent(supervisor)
        # Everything allocated so far (config, modules, runtime) lives as long as the
        # worker: move it out of the collector's sight, and collect young objects less
        # often -- the request path makes a few short-lived containers per request.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        send({"type": "ready", "worker": index, "pid": os.getpid()})
        tasks.append(asyncio.create_task(ticker()))
        await stop.wait()
    grace = cfg.global_.grace
    if orphaned:
        # Nobody supervises us any more: stop accepting now, give in-flight exchanges
        # a moment, and make sure the process ends even if the drain does not.
        signal.alarm(ORPHAN_DEADLINE)
        grace = min(grace, ORPHAN_GRACE)
    if started:
        await rt.drain(grace)
    rt.access_logs.close()  # the lines of the last requests, written before the exit
    for t in tasks:
        t.cancel()
    if not orphaned:
        send(rt.report())
        await _flush(writer)
    return 0


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()


async def _flush(writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(writer.drain(), 1.0)
    except (OSError, TimeoutError):
        pass


def run_worker(cfg: Config, index: int, chan: socket.socket, supervisor: int,
               socks: dict[str, socket.socket] | None = None, ours: frozenset[int] = frozenset()) -> int:
    """Entry point in the forked child (after :func:`die_with_parent` and
    :func:`reset_signals`). Returns the exit status."""
    import uvloop

    try:
        return uvloop.run(_worker_main(cfg, index, chan, supervisor, socks or {}, ours))
    except Exception:
        log.exception("worker %d crashed", index)
        return 1

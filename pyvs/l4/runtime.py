"""Layer 4 inside one worker: the tcp and udp listeners of the user-space data plane.

:class:`L4Runtime` is what :class:`pyvs.runtime.worker.WorkerRuntime` holds for every
``mode: tcp`` / ``mode: udp`` listener with ``dataplane: userspace`` (kernel data
planes are programmed once per pyvs instance by :mod:`pyvs.l4.kernel` in the
supervisor and need nothing in the workers). It binds the listeners (SO_REUSEPORT,
like the HTTP ones), owns the resources every session borrows (the copy buffer and
pipe pool of :mod:`pyvs.l4.pump`, the datagram buffer) and a coarse clock, ``now``,
refreshed by one periodic tick that also expires idle UDP flows.

The backends are the worker's own :class:`~pyvs.upstream.server.BackendRuntime`
objects, shared with the HTTP listeners: schedulers, health state (``server_up`` /
``server_down``), weights and per-server counters are the same ones.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from pyvs.l4.pump import Shared
from pyvs.l4.tcp import TcpListener
from pyvs.l4.udp import MAX_DATAGRAM, UdpListener

if TYPE_CHECKING:
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.upstream.server import ServerState

TICK = 0.1  # seconds between refreshes of the coarse clock and UDP expiry sweeps
UDP_REPLY_GRACE = 1.0  # seconds a draining worker still relays replies of its UDP sessions

class L4Runtime:
    """The user-space tcp/udp listeners of one worker."""

    def __init__(self, worker: WorkerRuntime) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.stats = worker.stats
        self.sweeper = worker.sweeper
        self.shared = Shared(self.loop)
        self.dgram_buf = bytearray(MAX_DATAGRAM)
        self.dgram_view = memoryview(self.dgram_buf)
        self.now = self.loop.time()
        self.tcp: list[TcpListener] = []
        self.udp: list[UdpListener] = []
        self._addrs: dict[tuple[str, int, int], tuple[int, tuple[str, int]]] = {}
        self._tick_handle: asyncio.TimerHandle | None = None
        self.drained: asyncio.Event | None = None  # set while draining, once no session is left

    @classmethod
    def start(cls, worker: WorkerRuntime) -> L4Runtime:
        """Bind and start every user-space tcp/udp listener of the config."""
        rt = cls(worker)
        for lc in worker.cfg.listeners:
            if lc.mode not in ("tcp", "udp") or lc.dataplane != "userspace":
                continue
            backend = worker.backends[lc.backend or ""]
            for addr in lc.bind:
                if lc.mode == "tcp":
                    tl = TcpListener(rt, lc, backend, worker.listen_socket(addr))
                    tl.start()
                    rt.tcp.append(tl)
                else:
                    ul = UdpListener(rt, lc, backend, worker.udp_socket(addr))
                    ul.start()
                    rt.udp.append(ul)
        if rt.udp:
            rt._tick_handle = rt.loop.call_later(TICK, rt._tick)
        return rt

    def sockaddr(self, server: ServerState) -> tuple[int, tuple[str, int]]:
        """(family, sockaddr) of a server, resolved once: ``connect`` must not block on DNS."""
        key = (server.host, server.port, id(server.backend))
        found = self._addrs.get(key)
        if found is None:
            family, _, _, _, sa = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)[0]
            found = self._addrs[key] = (family, (str(sa[0]), int(sa[1])))
        return found

    def _tick(self) -> None:
        now = self.now = self.loop.time()
        for ul in self.udp:
            ul.expire(now)
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def connections(self) -> int:
        """Client connections and UDP flows open now."""
        return sum(len(t.sessions) for t in self.tcp) + sum(len(u.sessions) for u in self.udp)

    # ------------------------------------------------------------ shutdown
    def stop_accepting(self) -> None:
        """Drain, step 1: no new TCP connections, no new datagrams read (the slot's
        socket is the next generation's now). UDP sessions stay a moment
        (:meth:`drain`): a reply to a datagram just relayed still reaches its client."""
        for tl in self.tcp:
            tl.stop_accepting()
            while tl.queue:
                tl.queue[0].abort()
        for ul in self.udp:
            ul.stop_reading()

    def _close_udp(self) -> None:
        for ul in self.udp:
            ul.close()
        self.udp.clear()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    async def drain(self, deadline: float) -> None:
        """Drain, step 2: let relayed TCP connections finish until ``deadline`` (loop
        time), then reset the rest. Sessions signal their end (:meth:`session_closed`)."""
        self.stop_accepting()
        self.drained = asyncio.Event()
        self.session_closed()
        if self.udp:  # replies to datagrams relayed just before the drain
            await asyncio.sleep(max(0.0, min(UDP_REPLY_GRACE, deadline - self.loop.time())))
            self._close_udp()
            self.session_closed()  # the UDP sessions were connections too
        try:
            await asyncio.wait_for(self.drained.wait(), max(0.0, deadline - self.loop.time()))
        except TimeoutError:
            pass
        for tl in self.tcp:
            for session in list(tl.sessions):
                session.abort()
        self.shared.pipes.close()

    def session_closed(self) -> None:
        if self.drained is not None and not self.connections():
            self.drained.set()

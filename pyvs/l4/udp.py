"""The user-space UDP proxy (``mode: udp``): per-flow sessions, replies routed back.

Theory of operation
-------------------
UDP has no connections, so pyvs makes *flows*: the client's (address, port) is the
key of a :class:`UdpSession` that owns one connected UDP socket to the chosen server.
A datagram from a new client address picks a server (weighted schedulers, source
hashing -- the :class:`~pyvs.balance.base.PickContext` carries the client address)
and opens the session; later datagrams of that flow reuse it. Whatever the server
sends back on that socket is written to the client from the listener's socket, so
the reply comes from the address the client sent to. With SO_REUSEPORT the kernel
hashes a flow to one worker, so every datagram of a flow meets the same session.

The session table is an ``OrderedDict`` kept in order of last activity (a datagram
either way moves the flow to the end), which makes both bounds cheap:

* idle timeout -- a periodic sweep pops flows from the front while they have been
  idle for ``udp.session_timeout``, and stops at the first that has not;
* size bound -- when ``udp.max_sessions`` flows exist, a new flow evicts the front
  one: the least recently active, i.e. the oldest idle session. Evictions are counted
  (``udp_evictions``): a steady count means the bound is too small.

Time is the runtime's coarse clock (``L4Runtime.now``, refreshed every tick), so a
datagram costs no clock read. Datagrams go through one buffer shared by the worker
(``recvfrom_into``), not a new ``bytes`` each. A datagram that cannot be sent at
once (socket buffer full, ICMP error pending) is dropped and counted, as a router would.
"""

from __future__ import annotations

import logging
import select
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING

from pyvs.l4.admission import pick_with_room

if TYPE_CHECKING:
    from pyvs.config.schema import Listener
    from pyvs.l4.runtime import L4Runtime
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.l4")

BATCH = 64  # datagrams per wakeup before yielding to other sockets
MAX_DATAGRAM = 65535

Flow = tuple[str, int]


class UdpSession:
    """One flow: a client address and the connected socket to its server."""

    __slots__ = ("addr", "last", "lst", "server", "sock")

    def __init__(self, lst: UdpListener, addr: Flow, server: ServerState, sock: socket.socket) -> None:
        self.lst = lst
        self.addr = addr
        self.server = server
        self.sock = sock
        self.last = lst.rt.now

    def on_event(self, ev: int) -> None:
        """Replies from the server: send each to the client, from the listener's socket.
        Edge-triggered: read until EAGAIN, or come back soon when the batch is used up."""
        lst = self.lst
        rt = lst.rt
        buf, view = rt.dgram_buf, rt.dgram_view
        out = lst.sock
        stats = rt.stats
        if self.sock.fileno() < 0:
            return  # closed meanwhile (evicted while a call_soon was pending)
        moved = False
        for _ in range(BATCH):
            try:
                n = self.sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError:  # ICMP port unreachable from the server, reported on the next call
                stats.udp_drops += 1
                continue
            try:
                out.sendto(view[:n], self.addr)
            except OSError:
                stats.udp_drops += 1
                continue
            stats.udp_datagrams_out += 1
            moved = True
        else:
            rt.loop.call_soon(self.on_event, 0)
        if moved and lst.sessions.get(self.addr) is self:
            self.last = rt.now
            lst.sessions.move_to_end(self.addr)

    def close(self) -> None:
        rt = self.lst.rt
        rt.shared.reactor.forget(self.sock.fileno())
        self.sock.close()
        server = self.server
        server.give()
        server.backend.scheduler.released(server.target)


class UdpListener:
    """One bind address of a udp listener inside one worker."""

    def __init__(self, rt: L4Runtime, cfg: Listener, backend: BackendRuntime, sock: socket.socket) -> None:
        self.rt = rt
        self.cfg = cfg
        self.name = cfg.name
        self.backend = backend
        self.sock = sock
        self.timeout = cfg.udp.session_timeout
        self.max_sessions = cfg.udp.max_sessions
        self.sessions: OrderedDict[Flow, UdpSession] = OrderedDict()
        self.reading = False

    def start(self) -> None:
        self.rt.loop.add_reader(self.sock.fileno(), self._on_datagrams)
        self.reading = True

    def stop_reading(self) -> None:
        """No new datagrams (a drain): the sessions still relay their replies."""
        if self.reading:
            self.rt.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def close(self) -> None:
        if self.reading:
            self.rt.loop.remove_reader(self.sock.fileno())
            self.reading = False
        while self.sessions:
            _, session = self.sessions.popitem(last=False)
            session.close()
        self.sock.close()

    def _on_datagrams(self) -> None:
        rt = self.rt
        buf, view = rt.dgram_buf, rt.dgram_view
        sock = self.sock
        sessions = self.sessions
        stats = rt.stats
        now = rt.now
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                return
            except OSError:
                continue
            flow: Flow = (addr[0], addr[1])
            session = sessions.get(flow)
            if session is None:
                session = self._open(flow)
                if session is None:
                    stats.udp_drops += 1
                    continue
            else:
                sessions.move_to_end(flow)
                session.last = now
            stats.udp_datagrams_in += 1
            try:
                session.sock.send(view[:n])
            except OSError:
                stats.udp_drops += 1

    def _open(self, flow: Flow) -> UdpSession | None:
        server = pick_with_room(self.backend, flow[0], frozenset())
        if server is None or isinstance(server, str):  # none usable, or all at maxconn
            self.backend.no_server += server is None
            return None
        sessions = self.sessions
        if len(sessions) >= self.max_sessions:
            _, oldest = sessions.popitem(last=False)
            oldest.close()
            self.rt.stats.udp_evictions += 1
        family, sockaddr = self.rt.sockaddr(server)
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            log.warning("listener %s: cannot reach %s: %s", self.name, server.name, exc)
            server.conn_failures += 1
            return None
        server.take()
        server.requests += 1
        server.opened += 1
        server.backend.scheduler.taken(server.target)
        session = UdpSession(self, flow, server, sock)
        sessions[flow] = session
        self.rt.stats.udp_sessions += 1
        self.rt.shared.reactor.register(sock.fileno(), session.on_event, select.EPOLLIN | select.EPOLLET)
        return session

    def expire(self, now: float) -> None:
        """Close flows idle for ``session_timeout`` (the front of the table is the oldest)."""
        sessions = self.sessions
        limit = now - self.timeout
        while sessions:
            flow, session = next(iter(sessions.items()))
            if session.last > limit:
                return
            del sessions[flow]
            session.close()
            self.rt.stats.udp_timeouts += 1

"""The user-space TCP proxy (``mode: tcp``): accept, choose a server, relay bytes.

Theory of operation
-------------------
A :class:`TcpListener` accepts on its own SO_REUSEPORT socket (every worker has one)
from an event-loop reader callback, up to ``ACCEPT_BATCH`` connections per wakeup.
Each client connection becomes a :class:`TcpSession`, which walks through

    HEADER -> QUEUED -> CONNECTING -> RELAY -> closed
    (HEADER only with ``accept_proxy``; QUEUED only when no slot is free)

* HEADER: read and parse the PROXY header (:mod:`pyvs.l4.proxyproto`); a malformed
  one, or none within ``timeouts.request``, closes the connection. Bytes after the
  header are payload and go to the server first.
* admission: a session needs a listener slot (``maxconn``) and a server with a free
  slot (its ``maxconn``). Without one it waits in the listener's FIFO queue (at most
  ``queue.size`` sessions, each at most ``queue.timeout``); a full queue closes the
  new connection at once. Every finished session re-runs admission for the queue head.
* CONNECTING: non-blocking ``connect``; success is the socket turning writable. A
  failure or ``timeouts.connect`` retries on another server (``retries``).
* RELAY: two :class:`pyvs.l4.pump.Pump` objects, one per direction. With
  ``send_proxy`` the PROXY header is the first thing the server receives.

Timeouts use the worker's :class:`pyvs.runtime.timers.Sweeper`: one ``deadline`` float
per session. During RELAY the pumps only set ``moved = True`` (no clock read per
chunk); the sweeper visits the session every quarter of ``tcp.idle_timeout`` and a
session that moved nothing since ``idle_timeout`` is closed.

Errors: a reset or broken pipe on either side resets both sides (``SO_LINGER`` 0), so
a client whose server died mid-stream sees a reset, never a clean end of a truncated
stream. A clean FIN is passed on as a FIN (half-close), see :mod:`pyvs.l4.pump`.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import select
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

from pyvs.l4 import proxyproto
from pyvs.l4.admission import FULL, pick_with_room
from pyvs.l4.pump import Pump
from pyvs.l4.reactor import ENDS, IN, OUT

if TYPE_CHECKING:
    from pyvs.config.schema import Listener
    from pyvs.l4.runtime import L4Runtime
    from pyvs.upstream.server import BackendRuntime, ServerState

log = logging.getLogger("pyvs.l4")

ACCEPT_BATCH = 64
QUEUE_POLL = 0.005  # seconds between looks for a slot while connections are queued
HEADER_MAX = 16 + 65535  # the largest PROXY v2 header
_LINGER_RESET = struct.pack("ii", 1, 0)
_NO_TRIES: frozenset[int] = frozenset()

# Session states
HEADER = 0
QUEUED = 1
CONNECTING = 2
RELAY = 3
CLOSED = 4



class TcpListener:
    """One bind address of a tcp listener inside one worker."""

    def __init__(self, rt: L4Runtime, cfg: Listener, backend: BackendRuntime, sock: socket.socket) -> None:
        self.rt = rt
        self.cfg = cfg
        self.name = cfg.name
        self.backend = backend
        self.sock = sock
        self.family = int(sock.family)
        self.loop = rt.loop
        self.maxconn = cfg.maxconn
        self.queue_size = cfg.queue.size
        self.queue_timeout = cfg.queue.timeout
        self.idle_timeout = cfg.tcp.idle_timeout
        self.idle_check = cfg.tcp.idle_timeout / 4
        self.header_timeout = cfg.timeouts.request
        self.accept_proxy = cfg.accept_proxy
        self.send_proxy = cfg.send_proxy
        self.active = 0  # sessions holding a listener slot
        self.queue: deque[TcpSession] = deque()
        self.poll_handle: asyncio.TimerHandle | None = None
        self.sessions: set[TcpSession] = set()
        self.accepting = False

    def start(self) -> None:
        self.sock.listen(self.cfg.backlog)
        self.loop.add_reader(self.sock.fileno(), self._on_acceptable)
        self.accepting = True

    def stop_accepting(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False
        if self.sock.fileno() >= 0:
            self.sock.close()

    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = self.sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment instead of spinning.
                    log.warning("listener %s: accept failed (%s); pausing 100 ms", self.name, exc.strerror)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(0.1, self._resume_accepting)
                return
            # The C socket type, not socket.socket: its creation, close and methods
            # skip a layer of Python (measured on the connection-rate benchmark).
            conn = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
            conn.setblocking(False)
            TcpSession(self, conn, addr).begin()

    def _resume_accepting(self) -> None:
        if self.accepting:
            self.loop.add_reader(self.sock.fileno(), self._on_acceptable)

    # ------------------------------------------------------------ admission
    def admit_queued(self) -> None:
        """A slot was freed: start queued sessions, oldest first, while slots last."""
        queue = self.queue
        while queue:
            if self.maxconn and self.active >= self.maxconn:
                break
            session = queue[0]
            if not session.try_start():
                break
            queue.popleft()
        self._arm_poll()

    def _arm_poll(self) -> None:
        """While sessions wait for a server slot, look again every ``QUEUE_POLL``: a slot
        another worker frees (servers' maxconn counts are instance-wide) is seen here
        only this way."""
        if self.queue and self.poll_handle is None:
            self.poll_handle = self.loop.call_later(QUEUE_POLL, self._poll)

    def _poll(self) -> None:
        self.poll_handle = None
        self.admit_queued()


class TcpSession:
    """One client connection; see the module docstring for its states."""

    __slots__ = (
        "attempts",
        "c2s",
        "client",
        "client_addr",
        "client_ev",
        "deadline",
        "dst_addr",
        "holds_slot",
        "idle_since",
        "lst",
        "moved",
        "payload",
        "rt",
        "s2c",
        "server",
        "state",
        "tried",
        "up",
    )

    def __init__(self, lst: TcpListener, client: _socket.socket, addr: tuple[str, int]) -> None:
        self.lst = lst
        self.rt = lst.rt
        self.client = client
        self.client_addr: tuple[str, int] = (addr[0], addr[1])
        self.dst_addr: tuple[str, int] | None = None  # set by an accepted PROXY header
        self.up: _socket.socket | None = None
        self.server: ServerState | None = None
        self.c2s: Pump | None = None
        self.s2c: Pump | None = None
        self.payload = b""  # header bytes while HEADER; then payload read with the header
        self.state = HEADER
        self.deadline = 0.0
        self.idle_since = 0.0
        self.moved = False
        self.tried = _NO_TRIES
        self.attempts = 0
        self.holds_slot = False
        self.client_ev = 0  # edges of the client socket seen before the relay started

    # ------------------------------------------------------------ events
    def _on_client_event(self, ev: int) -> None:
        state = self.state
        if state == RELAY:
            if ev & IN:
                self.c2s.on_readable(bool(ev & ENDS))  # type: ignore[union-attr]
            if ev & OUT and self.state == RELAY:
                self.s2c.on_writable()  # type: ignore[union-attr]
        elif state == HEADER:
            if ev & IN:
                self._on_header_bytes()
        else:
            self.client_ev |= ev
            if state == QUEUED and ev & (select.EPOLLHUP | select.EPOLLERR):
                self._close(reset=True)  # gave up waiting (a half-close is kept: it may still want the answer)

    def _on_up_event(self, ev: int) -> None:
        state = self.state
        if state == RELAY:
            if ev & IN:
                self.s2c.on_readable(bool(ev & ENDS))  # type: ignore[union-attr]
            if ev & OUT and self.state == RELAY:
                self.c2s.on_writable()  # type: ignore[union-attr]
        elif state == CONNECTING and ev & OUT:
            self._on_connected(ev)

    # ------------------------------------------------------------ start
    def begin(self) -> None:
        lst, rt = self.lst, self.rt
        rt.stats.l4_connections += 1
        lst.sessions.add(self)
        rt.sweeper.add(self)
        rt.shared.reactor.register(self.client.fileno(), self._on_client_event)
        if lst.accept_proxy:
            self.deadline = rt.loop.time() + lst.header_timeout
            self._on_header_bytes()  # it may be there already
        else:
            self._admit()

    def _on_header_bytes(self) -> None:
        while True:
            try:
                data = self.client.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                self._close(reset=True)
                return
            if not data:
                self._close()
                return
            self.payload += data
            try:
                hdr = proxyproto.parse(self.payload)
            except proxyproto.ProxyProtocolError as exc:
                log.debug("listener %s: %s from %s", self.lst.name, exc, self.client_addr[0])
                self.rt.stats.l4_proxy_errors += 1
                self._close(reset=True)
                return
            if hdr is not None:
                break
            if len(self.payload) >= HEADER_MAX:
                self.rt.stats.l4_proxy_errors += 1
                self._close(reset=True)
                return
            if len(data) < 4096:
                return  # drained: the next edge brings more
        self.payload = self.payload[hdr.consumed :]
        if hdr.src is not None and hdr.dst is not None:
            self.client_addr = hdr.src
            self.dst_addr = hdr.dst
        self.client_ev = IN  # more may wait behind the header: read it when relaying
        self.state = QUEUED  # not reading the client any more until the relay starts
        self._admit()

    def _admit(self) -> None:
        lst = self.lst
        if (lst.maxconn and lst.active >= lst.maxconn) or lst.queue or not self.try_start():
            if self.state == CLOSED:
                return
            if len(lst.queue) >= lst.queue_size:
                self.rt.stats.l4_queue_full += 1
                self._close(reset=True)
                return
            self.state = QUEUED
            self.rt.stats.l4_queued += 1
            self.deadline = self.rt.loop.time() + lst.queue_timeout
            lst.queue.append(self)
            lst._arm_poll()

    def try_start(self) -> bool:
        """Take a server slot and connect; False when every server is full (stay queued).
        With no usable server at all the session is closed (and True returned: it is
        no longer waiting)."""
        server = pick_with_room(self.lst.backend, self.client_addr[0], self.tried)
        if server == FULL:
            return False
        if server is None or isinstance(server, str):
            self.lst.backend.no_server += 1
            self._close(reset=True)
            return True
        if not self.holds_slot:
            self.holds_slot = True
            self.lst.active += 1
        self._connect(server)
        return True

    # ------------------------------------------------------------ connect
    def _connect(self, server: ServerState) -> None:
        self.state = CONNECTING
        self.server = server
        self.attempts += 1
        server.take()
        server.requests += 1
        server.backend.scheduler.taken(server.target)
        family, sockaddr = self.rt.sockaddr(server)
        up = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self.up = up
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rt.shared.reactor.register(up.fileno(), self._on_up_event)
        err = up.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._connect_failed(err)
            return
        # Connected (or failed) is the socket's first writable edge.
        self.deadline = self.rt.loop.time() + server.backend.connect_timeout

    def _on_connected(self, ev: int) -> None:
        up = self.up
        assert up is not None
        if ev & (select.EPOLLERR | select.EPOLLHUP):  # else the connect succeeded: no SO_ERROR call
            err = up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._connect_failed(err)
                return
        assert self.server is not None
        self.server.opened += 1
        self._relay(bool(ev & IN))

    def _connect_failed(self, err: int, timeout: bool = False) -> None:
        server, up = self.server, self.up
        assert server is not None and up is not None
        if timeout:
            self.rt.stats.connect_timeouts += 1
        else:
            server.conn_failures += 1
            log.debug("listener %s: connect to %s failed: %s", self.lst.name, server.name, errno.errorcode.get(err))
        self._release_server()
        self.rt.shared.reactor.forget(up.fileno())
        up.close()
        self.up = None
        if self.attempts <= server.backend.retries:
            self.rt.stats.retries += 1
            self.tried = self.tried | server.index_set
            if self.try_start():
                return
            # Every other server is at its maxconn: wait for one like a new connection.
            self.lst.active -= 1
            self.holds_slot = False
            self._admit()
            return
        self._close(reset=True)

    def _release_server(self) -> None:
        server = self.server
        if server is not None:
            self.server = None
            server.give()
            server.backend.scheduler.released(server.target)

    # ------------------------------------------------------------ relay
    def _relay(self, up_readable: bool) -> None:
        lst, up = self.lst, self.up
        assert up is not None
        head = b""
        if lst.send_proxy:
            dst = self.dst_addr
            if dst is None:
                local = self.client.getsockname()
                dst = (local[0], local[1])
            head = proxyproto.build(lst.send_proxy, self.client_addr, dst)
        shared = self.rt.shared
        self.c2s = Pump(self, shared, self.client, up, head + self.payload)
        self.s2c = Pump(self, shared, up, self.client)
        self.payload = b""
        self.state = RELAY
        now = self.rt.loop.time()
        self.idle_since = now
        self.deadline = now + lst.idle_check
        self.c2s.start(read_now=bool(self.client_ev & IN), ending=bool(self.client_ev & ENDS))
        if self.state == RELAY:
            self.s2c.start(read_now=up_readable, ending=up_readable)

    def other_done(self, pump: Pump) -> bool:
        other = self.s2c if pump is self.c2s else self.c2s
        return other is not None and other.done

    def pump_done(self, pump: Pump) -> None:
        if self.c2s is not None and self.s2c is not None and self.c2s.done and self.s2c.done:
            self._close()

    def pump_failed(self, pump: Pump, exc: OSError) -> None:
        log.debug("listener %s: relay error %s", self.lst.name, exc)
        self._close(reset=True)

    # ------------------------------------------------------------ timeouts
    def on_deadline(self, now: float) -> None:
        state = self.state
        if state == RELAY:
            if self.moved:
                self.moved = False
                self.idle_since = now
            elif now - self.idle_since >= self.lst.idle_timeout:
                self.rt.stats.l4_idle_timeouts += 1
                self._close(reset=True)
                return
            self.deadline = now + self.lst.idle_check
        elif state == CONNECTING:
            self._connect_failed(errno.ETIMEDOUT, timeout=True)
        elif state == QUEUED:
            self.rt.stats.l4_queue_timeouts += 1
            self._close(reset=True)
        elif state == HEADER:
            self.rt.stats.l4_proxy_errors += 1
            self._close(reset=True)

    # ------------------------------------------------------------ teardown
    def abort(self) -> None:
        self._close(reset=True)

    def _close(self, reset: bool = False) -> None:
        state = self.state
        if state == CLOSED:
            return
        self.state = CLOSED
        lst, rt = self.lst, self.rt
        if state == QUEUED:
            try:
                lst.queue.remove(self)
            except ValueError:
                pass
        stats = rt.stats
        for pump in (self.c2s, self.s2c):
            if pump is not None:
                pump.stop()
        if self.c2s is not None:
            stats.l4_bytes_in += self.c2s.nbytes
        if self.s2c is not None:
            stats.l4_bytes_out += self.s2c.nbytes
        self.c2s = self.s2c = None  # each pump points back here: no cycle left for the collector
        reactor = rt.shared.reactor
        for sock in (self.client, self.up):
            if sock is not None:
                reactor.forget(sock.fileno())
                if reset:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    except OSError:
                        pass
                rt.shared.close_later(sock)
        self.up = None
        self._release_server()
        lst.sessions.discard(self)
        rt.sweeper.discard(self)
        if self.holds_slot:
            self.holds_slot = False
            lst.active -= 1
        if lst.queue:
            lst.admit_queued()
        if rt.drained is not None:
            rt.session_closed()

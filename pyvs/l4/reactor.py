"""One private edge-triggered epoll per worker for layer-4 sockets.

Why not ``loop.add_reader``: uvloop gives each file descriptor a libuv poll handle
that is created, started, stopped and closed as readers and writers come and go.
Measured with ``strace -c`` on a connection-per-request load, that cost about 18
``epoll_ctl`` calls per proxied connection (half of them failing), and removing the
last watcher of a descriptor and adding a new one on the same descriptor within one
callback (connect done -> start reading; a UDP flow evicted and a new socket with the
same number opened) could leave the new watcher deaf, hanging the connection.

Instead, every layer-4 socket is registered once, when it is created, in an epoll
object of our own with ``EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET``; the event loop
watches only that epoll's descriptor. Closing a socket removes it from the epoll
set by itself, so a connection costs one ``epoll_ctl`` per socket and nothing when
its direction of interest changes.

Edge-triggered means an event is reported once per change of state. Handlers must
therefore read until ``EAGAIN`` (or a short read, which for a stream socket means the
same) and, when they stop early for fairness, schedule themselves again
(``loop.call_soon``): no new edge would come for bytes already waiting.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

EDGE = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
ENDS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR  # a FIN or an error came with the edge
MAX_EVENTS = 256

Handler = Callable[[int], None]


class Reactor:
    """Dispatches edge events of registered descriptors to their handlers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self.forgotten: set[int] = set()
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def register(self, fd: int, handler: Handler, events: int = EDGE) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, events)

    def forget(self, fd: int) -> None:
        """Call before closing ``fd`` (closing removes it from the epoll set)."""
        self.handlers.pop(fd, None)
        self.forgotten.add(fd)

    def _dispatch(self) -> None:
        # An event of this batch for a descriptor closed by an earlier handler of the
        # same batch is stale, even if the number was reused (accept, connect) since:
        # the new socket's own events come in a later batch.
        handlers = self.handlers
        forgotten = self.forgotten
        forgotten.clear()
        for fd, events in self.ep.poll(0, MAX_EVENTS):
            if fd in forgotten:
                continue
            handler = handlers.get(fd)
            if handler is not None:
                handler(events)

    def close(self) -> None:
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.handlers.clear()

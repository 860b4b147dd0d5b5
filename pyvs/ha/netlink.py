"""Interfaces and addresses through netlink (pyroute2), usable from the event loop.

Why a thread: pyroute2's asynchronous API opens its netlink socket as an asyncio
datagram endpoint, which uvloop refuses (``invalid family 16``), and its synchronous
``IPRoute`` runs a private event loop that cannot nest inside ours. So one dedicated
thread owns one ``IPRoute`` and every call is submitted to it; a single thread also
keeps add/remove of the same address in submission order, which the VRRP glue relies
on (a release queued after a take always runs after it).

Link changes are learnt from a plain ``AF_NETLINK`` socket subscribed to
``RTMGRP_LINK``: it only wakes :class:`LinkWatcher`, which then asks for the current
state, so no netlink message is parsed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("pyvs.ha")

T = TypeVar("T")
RTMGRP_LINK = 0x1
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40


class NetlinkFailure(OSError):
    """A netlink request failed (translated from pyroute2's ``NetlinkError``)."""


@dataclass(frozen=True)
class LinkInfo:
    """What the VRRP glue needs to know about an interface."""

    name: str
    index: int
    mac: bytes
    up: bool
    ipv4: tuple[ipaddress.IPv4Interface, ...]
    ipv6: tuple[ipaddress.IPv6Interface, ...]

    @property
    def link_local(self) -> ipaddress.IPv6Address | None:
        for a in self.ipv6:
            if a.ip.is_link_local:
                return a.ip
        return None


class Netlink:
    """One pyroute2 ``IPRoute`` in one thread; all methods are coroutines."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pyvs-netlink")
        self._local = threading.local()

    def _ipr(self) -> Any:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            from pyroute2 import IPRoute  # type: ignore[import-untyped]

            ipr = self._local.ipr = IPRoute()
        return ipr

    async def _call(self, fn: Callable[[], T]) -> T:
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

        def wrapped() -> T:
            try:
                return fn()
            except NetlinkError as exc:
                raise NetlinkFailure(exc.code, f"netlink: {exc}") from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, wrapped)

    async def link(self, name: str) -> LinkInfo | None:
        """The interface ``name`` with its flags and addresses, or None if it does not exist."""

        def get() -> LinkInfo | None:
            ipr = self._ipr()
            found = ipr.link_lookup(ifname=name)
            if not found:
                return None
            index = found[0]
            msg = ipr.get_links(index)[0]
            flags = msg["flags"]
            mac = bytes.fromhex((msg.get("address") or "00:00:00:00:00:00").replace(":", ""))
            v4: list[ipaddress.IPv4Interface] = []
            v6: list[ipaddress.IPv6Interface] = []
            for a in ipr.get_addr(index=index):
                addr = a.get("address")
                if addr is None or a["flags"] & IFA_F_TENTATIVE:
                    continue
                iface = ipaddress.ip_interface(f"{addr}/{a['prefixlen']}")
                if isinstance(iface, ipaddress.IPv4Interface):
                    v4.append(iface)
                else:
                    v6.append(iface)
            up = bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
            return LinkInfo(name, index, mac, up, tuple(v4), tuple(v6))

        return await self._call(get)

    async def add_address(self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
        """Add ``iface`` to the link; False if it was already there."""

        def add() -> bool:
            kw: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
            if iface.version == 6:
                kw["flags"] = IFA_F_NODAD  # usable at once: the VIP must answer during failover
            try:
                self._ipr().addr("add", **kw)
            except Exception as exc:
                if getattr(exc, "code", None) == errno.EEXIST:
                    return False
                raise
            return True

        return await self._call(add)

    async def remove_address(self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
        """Remove ``iface`` from the link; False if it was not there."""

        def remove() -> bool:
            try:
                self._ipr().addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except Exception as exc:
                if getattr(exc, "code", None) in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                    return False
                raise
            return True

        return await self._call(remove)

    async def close(self) -> None:
        def close() -> None:
            ipr = getattr(self._local, "ipr", None)
            if ipr is not None:
                ipr.close()
                self._local.ipr = None

        with contextlib.suppress(Exception):
            await self._call(close)
        self._pool.shutdown(wait=False)


class LinkWatcher:
    """Calls ``on_change(info_by_name)`` when any watched interface changes state.

    Subscribers register interface names; a netlink link event (or :meth:`refresh`)
    re-reads them all. Events arrive in bursts, so refreshes are coalesced.
    """

    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink
        self._names: set[str] = set()
        self._subscribers: list[Callable[[dict[str, LinkInfo | None]], None]] = []
        self._sock: socket.socket | None = None
        self._pending: asyncio.Task[None] | None = None
        self._dirty = False
        self.last: dict[str, LinkInfo | None] = {}

    def subscribe(self, names: set[str], callback: Callable[[dict[str, LinkInfo | None]], None]) -> None:
        self._names |= names
        self._subscribers.append(callback)

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_LINK))
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:  # ENOBUFS: events were lost; a refresh reads the truth anyway
                log.debug("link watcher: %s", exc)
                break
        self.refresh()

    def refresh(self) -> None:
        """Re-read the watched links soon; a change during a running read triggers another."""
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._refresh_while_dirty())

    async def _refresh_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            await self._refresh()

    async def refresh_now(self) -> dict[str, LinkInfo | None]:
        await self._refresh()
        return self.last

    async def _refresh(self) -> None:
        infos = {name: await self.netlink.link(name) for name in sorted(self._names)}
        self.last = infos
        for cb in self._subscribers:
            cb(infos)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._pending is not None:
            self._pending.cancel()

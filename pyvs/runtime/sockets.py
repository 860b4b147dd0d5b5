"""Listening sockets: the supervisor creates them, TCP and UDP, one SO_REUSEPORT socket
per address and worker slot (see :class:`SlotSockets`)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from pyvs.config.schema import Config, parse_address


def bind_socket(address: str, *, reuse_port: bool = True, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A bound, non-blocking socket for ``host:port``: TCP (not yet listening) by
    default, UDP with ``kind=socket.SOCK_DGRAM``."""
    host, port = parse_address(address)
    infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    family, stype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def tcp_listen_addresses(cfg: Config) -> list[str]:
    """Every address on which the workers accept TCP connections (HTTP listeners,
    user-space TCP listeners, DNS over TCP), in config order, without duplicates."""
    out: list[str] = []
    for lst in cfg.listeners:
        if lst.mode in ("http", "dns") or (lst.mode == "tcp" and lst.dataplane == "userspace"):
            for addr in lst.bind:
                if addr not in out:
                    out.append(addr)
    return out


UDP = "udp:"  # SlotSockets key prefix of a UDP address ("udp:0.0.0.0:53")


def udp_key(address: str) -> str:
    return UDP + address


def udp_listen_addresses(cfg: Config) -> list[str]:
    """The UDP addresses the workers read (user-space udp listeners, DNS over UDP) as
    :class:`SlotSockets` keys, in config order, without duplicates."""
    out: list[str] = []
    for lst in cfg.listeners:
        if lst.mode == "dns" or (lst.mode == "udp" and lst.dataplane == "userspace"):
            for addr in lst.bind:
                if udp_key(addr) not in out:
                    out.append(udp_key(addr))
    return out


def slot_addresses(cfg: Config) -> list[str]:
    """Every :class:`SlotSockets` key a worker of ``cfg`` inherits."""
    return tcp_listen_addresses(cfg) + udp_listen_addresses(cfg)


class SlotSockets:
    """The listening TCP sockets of one instance, created by the supervisor: one
    SO_REUSEPORT socket per (address, worker slot). Worker ``i`` of every generation
    inherits set ``i`` across ``fork()``, so a reload starts the new workers on the very
    sockets the old ones accept on: the sockets never close while a worker needs them,
    hence no SYN is refused and no queued connection is reset. The kernel still spreads
    connections across the slots (one socket per slot in each reuseport group).

    A socket is created bound but not listening; the worker calls ``listen()`` on its
    inherited copy when it opens its listeners (connections are taken only once what
    they route to is up). Closing a worker's copy never closes the socket: the
    supervisor keeps its own descriptor until the address leaves the config.

    UDP addresses (keys ``udp:ADDRESS``) get the same treatment: the reuseport group's
    members are the slots' sockets, each read by its slot's worker, so a reload hands
    the very socket (and the datagrams queued on it) to the new worker of the slot, and
    while a crashed worker restarts its share waits in the socket instead of being
    dropped."""

    def __init__(self, nslots: int) -> None:
        self.nslots = nslots
        self.by_addr: dict[str, list[socket.socket]] = {}

    def add(self, address: str) -> None:
        """Bind ``address`` once per slot (raises OSError; nothing is kept on failure)."""
        if address in self.by_addr:
            return
        made: list[socket.socket] = []
        try:
            for _ in range(self.nslots):
                if address.startswith(UDP):
                    made.append(bind_socket(address[len(UDP):], kind=socket.SOCK_DGRAM))
                else:
                    made.append(bind_socket(address))
        except OSError:
            for s in made:
                s.close()
            raise
        self.by_addr[address] = made

    def inodes(self) -> frozenset[int]:
        """The inodes of every socket here (to tell them apart in /proc/net/tcp)."""
        return frozenset(os.fstat(s.fileno()).st_ino for s in self.all())

    def for_slot(self, index: int, addresses: list[str]) -> dict[str, socket.socket]:
        return {a: self.by_addr[a][index] for a in addresses if a in self.by_addr}

    def all(self) -> list[socket.socket]:
        return [s for socks in self.by_addr.values() for s in socks]

    def remove(self, address: str) -> None:
        for s in self.by_addr.pop(address, []):
            s.close()

    def close(self) -> None:
        for addr in list(self.by_addr):
            self.remove(addr)


def refuse_if_listening(address: str, ours: frozenset[int] = frozenset()) -> None:
    """Raise EADDRINUSE when a socket already listens on ``address`` (or on a wildcard
    of its port). A bind with SO_REUSEPORT would succeed against another process of the
    same user that set it too -- another pyvs -- and silently take half of its
    connections. Read from the kernel's socket table (Linux), not by binding: a bound
    socket that does not listen (a test's port reservation) takes no connection and
    is no conflict. Sockets whose inode is in ``ours`` (this instance's) are no conflict
    either."""
    host, port = parse_address(address)
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    want = ipaddress.ip_address(sockaddr[0])
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    try:
        with open(table) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return  # not Linux: the bind below is the only check
    for row in rows:
        cols = row.split()
        local, state = cols[1], cols[3]
        if state != "0A" or (len(cols) > 9 and cols[9].isdigit() and int(cols[9]) in ours):  # TCP_LISTEN
            continue
        hexip, hexport = local.split(":")
        if int(hexport, 16) != port:
            continue
        words = [int(hexip[i : i + 8], 16) for i in range(0, len(hexip), 8)]  # host byte order
        have = ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))
        if have == want or have.is_unspecified or want.is_unspecified:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))

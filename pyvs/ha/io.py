"""Raw sockets for VRRP: adverts (IP protocol 112) and gratuitous ARP / unsolicited NA.

The sockets are thin: bytes in, bytes out. The codec and the checks live in
:mod:`pyvs.ha.packet`, the decisions in :mod:`pyvs.ha.state`.

Why ``sendmsg`` with ``IP_PKTINFO`` / ``IPV6_PKTINFO`` instead of ``bind()``: the
VRRPv3 checksum covers the source address, so we must choose it ourselves; but a
raw socket bound to an address only receives packets sent *to* that address, and
adverts go to the multicast group. Setting the source per packet keeps one socket
per instance for both directions. Every socket is bound to the instance's interface
(``SO_BINDTODEVICE``), sends with TTL / hop limit 255 as the RFCs require, and does
not loop its own multicast back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass

from pyvs.ha.packet import (
    ALL_NODES_V6,
    GROUP_V4,
    GROUP_V6,
    PROTO_VRRP,
    TTL,
    IPAddress,
    gratuitous_arp,
    neighbour_advert,
)

IP_PKTINFO = 8  # linux/in.h; the socket module does not export it
IP_MULTICAST_ALL = 49
ICMP6_FILTER = 1
IPPROTO_ICMPV6 = 58


@dataclass(frozen=True)
class Datagram:
    """One received VRRP payload with the IP facts the checks need."""

    payload: bytes
    source: IPAddress
    destination: IPAddress
    ttl: int


class VrrpSocket:
    """A non-blocking raw socket for protocol 112 on one interface and family."""

    def __init__(self, family: int, ifname: str, ifindex: int, *, multicast: bool) -> None:
        self.family = family
        self.ifindex = ifindex
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_RAW | socket.SOCK_NONBLOCK, PROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode() + b"\0")
            if family == 4:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
                mreqn = GROUP_V4.packed + b"\0\0\0\0" + struct.pack("=i", ifindex)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                if multicast:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                if multicast:
                    mreq = GROUP_V6.packed + struct.pack("=I", ifindex)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes, src: IPAddress, dst: IPAddress) -> None:
        """Send one advert from ``src`` to ``dst`` (the group or a unicast peer)."""
        if self.family == 4:
            info = struct.pack("=i4s4s", self.ifindex, src.packed, b"\0\0\0\0")
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
            self.sock.sendmsg([payload], cmsg, 0, (str(dst), 0))
        else:
            info = struct.pack("=16si", src.packed, self.ifindex)
            cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
            self.sock.sendmsg([payload], cmsg, 0, (str(dst), 0, 0, self.ifindex))

    def recv(self) -> Datagram | None:
        """The next datagram, or None when none is waiting. Malformed IPv4 headers raise."""
        from pyvs.ha.packet import parse_ipv4

        try:
            if self.family == 4:
                data = self.sock.recv(65535)
                src4, dst4, ttl, payload = parse_ipv4(data)
                return Datagram(payload, src4, dst4, ttl)
            data, ancdata, _, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4))
        except BlockingIOError:
            return None
        src6 = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
        dst6: ipaddress.IPv6Address | None = None
        hops = -1
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 16:
                dst6 = ipaddress.IPv6Address(value[:16])
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hops = struct.unpack("=i", value[:4])[0]
        return Datagram(data, src6, dst6 if dst6 is not None else GROUP_V6, hops)

    def close(self) -> None:
        self.sock.close()


class Announcer:
    """Sends gratuitous ARPs (IPv4) or unsolicited neighbour adverts (IPv6) for VIPs.

    Neither socket ever receives: the packet socket is opened with protocol 0 and the
    ICMPv6 socket filters every type out, so no queue fills up while pyvs runs.
    """

    def __init__(self, family: int, ifname: str, ifindex: int) -> None:
        self.family = family
        self.ifindex = ifindex
        if family == 4:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
            try:
                sock.bind((ifname, 0))
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, IPPROTO_ICMPV6)
            try:
                sock.setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode() + b"\0")
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            except BaseException:
                sock.close()
                raise
        self.sock = sock

    def announce(self, mac: bytes, vips: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]) -> int:
        """One announcement per VIP; returns how many were sent (a full queue drops one)."""
        sent = 0
        for vip in vips:
            with contextlib.suppress(BlockingIOError):
                if isinstance(vip, ipaddress.IPv4Interface):
                    self.sock.send(gratuitous_arp(mac, vip.ip))
                else:
                    self.sock.sendto(neighbour_advert(mac, vip.ip), (str(ALL_NODES_V6), 0, 0, self.ifindex))
                sent += 1
        return sent

    def close(self) -> None:
        self.sock.close()

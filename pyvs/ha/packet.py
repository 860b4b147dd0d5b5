"""VRRP advertisements as bytes: encode, decode and the receive checks (sans-I/O).

Theory of operation
-------------------
Two wire formats share one 8-byte header layout (RFC 3768 section 5.1, RFC 5798
section 5.1)::

     0               1               2               3
    |version| type  |   VRID        |   priority    | count addrs   |
    | v2: auth type | v2: interval  |          checksum             |
    | v3: rsvd | max advert interval (centiseconds) |  checksum     |
    | addresses (4 bytes each; 16 with VRRPv3 over IPv6) ...        |
    | v2 only: 8 bytes of authentication data                       |

The v2 checksum covers the VRRP message alone; the v3 checksum also covers the IP
pseudo-header (source, destination, protocol 112, length) for IPv4 as well as IPv6,
which is why encoding needs the addresses the packet will carry.

:func:`validate` applies the receive checks in the order a packet should be rejected
(RFC 5798 section 7.1, as strict as keepalived): TTL/hop limit 255, version, type,
lengths, checksum, VRID, then v2 authentication and the v2 rule that the advert
interval must equal ours. A packet that passes but lists other virtual addresses than
ours is reported (``addresses_match``) and, unless sent by the address owner, dropped.
Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTO_VRRP = 112
GROUP_V4 = ipaddress.IPv4Address("224.0.0.18")
GROUP_V6 = ipaddress.IPv6Address("ff02::12")
TYPE_ADVERT = 1
AUTH_NONE = 0
AUTH_PASS = 1
HEADER = 8
AUTH_DATA = 8
TTL = 255


class Drop(enum.Enum):
    """Why a received packet was discarded; each is a counter of the instance."""

    TTL = "ttl"
    VERSION = "version"
    TYPE = "type"
    LENGTH = "length"
    CHECKSUM = "checksum"
    VRID = "vrid"
    AUTH = "auth"
    INTERVAL = "interval"
    ADDRESSES = "addresses"
    PEER = "peer"
    OWN = "own"


class PacketError(ValueError):
    """A received packet failed a check; ``reason`` says which."""

    def __init__(self, reason: Drop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advert:
    """One advertisement, independent of its wire version.

    ``interval`` is in centiseconds for both versions (a v2 packet carries whole
    seconds, so it is always a multiple of 100 there).
    """

    version: int
    vrid: int
    priority: int
    interval: int
    addresses: tuple[IPAddress, ...]
    auth_type: int = AUTH_NONE
    auth_data: bytes = b"\0" * AUTH_DATA

    def __post_init__(self) -> None:
        if self.version not in (2, 3):
            raise ValueError(f"version must be 2 or 3, got {self.version}")
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1-255, got {self.vrid}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0-255, got {self.priority}")
        if not 0 < len(self.addresses) <= 255:
            raise ValueError("an advert carries 1-255 addresses")
        if len({a.version for a in self.addresses}) != 1:
            raise ValueError("an advert carries addresses of one family")
        if self.version == 2:
            if self.addresses[0].version != 4:
                raise ValueError("VRRPv2 carries IPv4 addresses only")
            if self.interval % 100 or not 100 <= self.interval <= 25500:
                raise ValueError(f"a v2 interval is whole seconds 1-255, got {self.interval} cs")
            if len(self.auth_data) != AUTH_DATA:
                raise ValueError("v2 authentication data is 8 bytes")
        elif not 1 <= self.interval <= 0xFFF:
            raise ValueError(f"a v3 interval is 1-4095 cs, got {self.interval}")

    @property
    def family(self) -> int:
        return self.addresses[0].version


def password_data(password: str | None) -> tuple[int, bytes]:
    """(auth type, 8 bytes of auth data) for a v2 simple password, zero-padded."""
    if password is None:
        return AUTH_NONE, b"\0" * AUTH_DATA
    raw = password.encode("ascii")
    if not 0 < len(raw) <= AUTH_DATA:
        raise ValueError("a VRRPv2 password is 1-8 ASCII characters")
    return AUTH_PASS, raw.ljust(AUTH_DATA, b"\0")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The IPv4 (RFC 768 layout) or IPv6 (RFC 8200 section 8.1) pseudo-header for protocol 112."""
    if src.version != dst.version:
        raise ValueError("source and destination of different families")
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, PROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, PROTO_VRRP)


def encode(advert: Advert, src: IPAddress, dst: IPAddress) -> bytes:
    """The VRRP message (no IP header) with its checksum filled in."""
    count = len(advert.addresses)
    addrs = b"".join(a.packed for a in advert.addresses)
    if advert.version == 2:
        head = struct.pack(
            "!BBBBBBH", 0x21, advert.vrid, advert.priority, count, advert.auth_type, advert.interval // 100, 0
        )
        body = head + addrs + advert.auth_data
        csum = checksum(body)
    else:
        head = struct.pack("!BBBBHH", 0x31, advert.vrid, advert.priority, count, advert.interval & 0xFFF, 0)
        body = head + addrs
        csum = checksum(pseudo_header(src, dst, len(body)) + body)
    return body[:6] + struct.pack("!H", csum) + body[8:]


@dataclass(frozen=True)
class Expect:
    """What the local instance accepts (the inputs of the receive checks)."""

    version: int
    vrid: int
    family: int
    interval: int
    addresses: frozenset[IPAddress]
    auth_type: int = AUTH_NONE
    auth_data: bytes = b"\0" * AUTH_DATA
    peers: frozenset[IPAddress] = frozenset()
    own: frozenset[IPAddress] = frozenset()


@dataclass(frozen=True)
class Received:
    """A packet that passed the checks."""

    advert: Advert
    source: IPAddress
    addresses_match: bool


def decode(payload: bytes, src: IPAddress, dst: IPAddress, family: int) -> Advert:
    """Parse and verify version, type, lengths and checksum; raises :class:`PacketError`."""
    if len(payload) < HEADER:
        raise PacketError(Drop.LENGTH, f"{len(payload)} bytes is shorter than the header")
    vt, vrid, prio, count, b4, b5, _ = struct.unpack("!BBBBBBH", payload[:HEADER])
    version, ptype = vt >> 4, vt & 0xF
    if version not in (2, 3) or (version == 2 and family != 4):
        raise PacketError(Drop.VERSION, f"version {version}")
    if ptype != TYPE_ADVERT:
        raise PacketError(Drop.TYPE, f"type {ptype}")
    alen = 4 if family == 4 else 16
    want = HEADER + count * alen + (AUTH_DATA if version == 2 else 0)
    if count == 0 or len(payload) != want:
        raise PacketError(Drop.LENGTH, f"{len(payload)} bytes for {count} address(es), expected {want}")
    if version == 2:
        ok = checksum(payload) == 0
    else:
        ok = checksum(pseudo_header(src, dst, len(payload)) + payload) == 0
    if not ok:
        raise PacketError(Drop.CHECKSUM, "bad checksum")
    if vrid == 0:
        raise PacketError(Drop.VRID, "vrid 0")
    raw = payload[HEADER : HEADER + count * alen]
    addrs: tuple[IPAddress, ...]
    if family == 4:
        addrs = tuple(ipaddress.IPv4Address(raw[i : i + 4]) for i in range(0, len(raw), 4))
    else:
        addrs = tuple(ipaddress.IPv6Address(raw[i : i + 16]) for i in range(0, len(raw), 16))
    if version == 2:
        if b5 == 0:
            raise PacketError(Drop.INTERVAL, "advert interval 0")
        return Advert(2, vrid, prio, b5 * 100, addrs, b4, payload[-AUTH_DATA:])
    interval = ((b4 << 8) | b5) & 0xFFF
    if interval == 0:
        raise PacketError(Drop.INTERVAL, "advert interval 0")
    return Advert(3, vrid, prio, interval, addrs)


def validate(payload: bytes, src: IPAddress, dst: IPAddress, ttl: int, expect: Expect) -> Received:
    """Every receive check, in order; raises :class:`PacketError` with the first failure."""
    if src in expect.own:
        raise PacketError(Drop.OWN, f"our own packet from {src}")
    if ttl != TTL:
        raise PacketError(Drop.TTL, f"TTL/hop limit {ttl} from {src}, expected 255")
    advert = decode(payload, src, dst, expect.family)
    if advert.version != expect.version:
        raise PacketError(Drop.VERSION, f"version {advert.version} from {src}, configured {expect.version}")
    if advert.vrid != expect.vrid:
        raise PacketError(Drop.VRID, f"vrid {advert.vrid}")
    if expect.peers and src not in expect.peers:
        raise PacketError(Drop.PEER, f"{src} is not a configured unicast peer")
    if advert.version == 2:
        if advert.auth_type != expect.auth_type:
            raise PacketError(Drop.AUTH, f"auth type {advert.auth_type} from {src}, configured {expect.auth_type}")
        if advert.auth_type == AUTH_PASS and advert.auth_data != expect.auth_data:
            raise PacketError(Drop.AUTH, f"wrong password from {src}")
        if advert.interval != expect.interval:
            raise PacketError(
                Drop.INTERVAL,
                f"advert interval {advert.interval // 100}s from {src}, configured {expect.interval // 100}s",
            )
    match = frozenset(advert.addresses) == expect.addresses and len(advert.addresses) == len(expect.addresses)
    if not match and advert.priority != 255:
        raise PacketError(
            Drop.ADDRESSES,
            f"{src} advertises {', '.join(map(str, advert.addresses))}; "
            f"configured {', '.join(sorted(map(str, expect.addresses)))}",
        )
    return Received(advert, src, match)


def parse_ipv4(datagram: bytes) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, int, bytes]:
    """(source, destination, TTL, payload) of an IPv4 datagram read from a raw socket."""
    if len(datagram) < 20:
        raise PacketError(Drop.LENGTH, f"{len(datagram)} bytes is not an IPv4 datagram")
    vihl, _, total, _, _, ttl, proto, _ = struct.unpack("!BBHHHBBH", datagram[:12])
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or total > len(datagram) or total < ihl:
        raise PacketError(Drop.LENGTH, "malformed IPv4 header")
    if proto != PROTO_VRRP:
        raise PacketError(Drop.TYPE, f"IP protocol {proto}")
    src = ipaddress.IPv4Address(datagram[12:16])
    dst = ipaddress.IPv4Address(datagram[16:20])
    return src, dst, ttl, datagram[ihl:total]


# ------------------------------------------------------------- announcements

ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
ALL_NODES_V6 = ipaddress.IPv6Address("ff02::1")


def gratuitous_arp(mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    """An Ethernet frame with a gratuitous ARP request for ``vip`` (sender = target = vip).

    A request rather than a reply: hosts update an existing cache entry from either,
    and requests also reach stacks that ignore unsolicited replies.
    """
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + vip.packed + b"\0" * 6 + vip.packed
    return eth + arp


def neighbour_advert(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited ICMPv6 neighbour advertisement for ``vip`` (RFC 4861 section 7.2.6).

    Override set so caches replace the old master's link-layer address; the checksum
    is left 0 because the kernel fills it in on raw ICMPv6 sockets.
    """
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    flags_override = 0x20000000
    option = struct.pack("!BB", 2, 1) + mac  # target link-layer address, 8 bytes
    return struct.pack("!BBHI", 136, 0, 0, flags_override) + vip.packed + option

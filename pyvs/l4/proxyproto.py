"""The PROXY protocol (HAProxy's spec, versions 1 and 2), sans I/O.

Theory of operation
-------------------
A front proxy that terminates the client's connection tells the next hop who the
client was by writing one header before any payload: a text line (v1,
``PROXY TCP4 1.2.3.4 10.0.0.1 5555 80\\r\\n``) or a binary block (v2: a 12-byte
signature, version/command, family/transport, length, addresses, optional TLVs).

:func:`parse` takes the bytes received so far and answers one of three ways:

* ``None`` -- the buffer is a proper prefix of a header: read more and call again;
* a :class:`ProxyHeader` -- a whole header; ``consumed`` bytes belong to it and the
  rest of the buffer is payload;
* :class:`ProxyProtocolError` -- the bytes cannot start a header (or the header is
  malformed): the connection must be closed. It never waits for more bytes once the
  buffer cannot become valid, so a client that is not a PROXY speaker is turned away
  at its first segment instead of after a timeout.

``LOCAL`` (v2) and ``UNKNOWN`` (v1) headers are valid and carry no addresses
(``src is None``): the connection is the front's own (a health check), and the
receiver uses the real peer address. TLVs are skipped, not interpreted.

:func:`build` makes the header pyvs sends to servers for ``send_proxy: v1|v2``.
The module holds no state and reads no clock; the callers in :mod:`pyvs.l4.tcp` (and
the HTTP connection, pyvs.l7.h1conn) own the socket.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's worst case, CRLF included
V2_MAX_BODY = 65535 - 16  # the length field is 16 bits; refuse nothing smaller
_V2_HEAD = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header; close the connection."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``src``/``dst`` are None for LOCAL / UNKNOWN headers."""

    version: int
    src: Address | None
    dst: Address | None
    consumed: int
    transport: str = "tcp"  # "tcp" | "udp" | "" (unspecified)

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"PROXY protocol version must be 1 or 2, not {self.version}")
        if (self.src is None) != (self.dst is None):
            raise ValueError("src and dst are either both known or both unknown")


def parse(buf: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """Parse a header at the start of ``buf``: a header, None (need more) or raise."""
    data = bytes(buf[:V1_MAX]) if buf[:1] == b"P" else bytes(buf[:16])
    if data[:1] == b"P":
        if len(data) < len(V1_PREFIX):
            if V1_PREFIX.startswith(data):
                return None
            raise ProxyProtocolError("not a PROXY protocol header")
        if not data.startswith(V1_PREFIX):
            raise ProxyProtocolError("not a PROXY protocol header")
        return _parse_v1(data)
    n = min(len(data), 12)
    if data[:n] != V2_SIGNATURE[:n]:
        raise ProxyProtocolError("not a PROXY protocol header")
    if len(data) < 16:
        return None
    _, ver_cmd, fam, length = _V2_HEAD.unpack(data)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {ver_cmd >> 4}")
    if len(buf) < 16 + length:
        return None
    body = bytes(buf[16 : 16 + length])
    return _parse_v2(ver_cmd & 0x0F, fam, body, 16 + length)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyProtocolError("PROXY v1: no CRLF within 107 bytes")
        return None
    line = data[len(V1_PREFIX) : end]
    if b"\n" in line:  # a bare LF: refused whether or not the CRLF arrived in the same read
        raise ProxyProtocolError("PROXY v1: no CRLF within 107 bytes")
    parts = line.split(b" ")
    if parts[0] == b"UNKNOWN":
        return ProxyHeader(1, None, None, end + 2, "")
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"PROXY v1: malformed line {line[:60]!r}")
    version = 4 if parts[0] == b"TCP4" else 6
    try:
        src_ip = _ip(parts[1], version)
        dst_ip = _ip(parts[2], version)
        src_port = _port(parts[3])
        dst_port = _port(parts[4])
    except ValueError as exc:
        raise ProxyProtocolError(f"PROXY v1: {exc}") from None
    return ProxyHeader(1, (src_ip, src_port), (dst_ip, dst_port), end + 2)


def _ip(text: bytes, version: int) -> str:
    addr = ipaddress.ip_address(text.decode("ascii"))
    if addr.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    return str(addr)


def _port(text: bytes) -> int:
    # The spec forbids leading zeros and signs; int() would take both.
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _parse_v2(command: int, fam: int, body: bytes, consumed: int) -> ProxyHeader:
    if command == 0x0:  # LOCAL: the front's own connection; addresses (if any) are ignored
        return ProxyHeader(2, None, None, consumed, "")
    if command != 0x1:
        raise ProxyProtocolError(f"PROXY v2: unknown command {command}")
    family, proto = fam >> 4, fam & 0x0F
    transport = {1: "tcp", 2: "udp"}.get(proto)
    if family == 0x0 and proto == 0x0:  # UNSPEC: unknown origin, like v1 UNKNOWN
        return ProxyHeader(2, None, None, consumed, "")
    if transport is None:
        raise ProxyProtocolError(f"PROXY v2: unsupported transport {proto}")
    if family == 0x1:
        if len(body) < _V2_INET.size:
            raise ProxyProtocolError("PROXY v2: address block too short for IPv4")
        s, d, sp, dp = _V2_INET.unpack_from(body)
        return ProxyHeader(2, (socket.inet_ntop(socket.AF_INET, s), sp),
                           (socket.inet_ntop(socket.AF_INET, d), dp), consumed, transport)
    if family == 0x2:
        if len(body) < _V2_INET6.size:
            raise ProxyProtocolError("PROXY v2: address block too short for IPv6")
        s, d, sp, dp = _V2_INET6.unpack_from(body)
        return ProxyHeader(2, (socket.inet_ntop(socket.AF_INET6, s), sp),
                           (socket.inet_ntop(socket.AF_INET6, d), dp), consumed, transport)
    raise ProxyProtocolError(f"PROXY v2: unsupported address family {family}")


# ---------------------------------------------------------------- building


def build(version: str, src: Address | None, dst: Address | None, transport: str = "tcp") -> bytes:
    """The header for ``send_proxy: v1|v2``; ``src=None`` gives UNKNOWN (v1) / LOCAL (v2)."""
    if version == "v1":
        return build_v1(src, dst)
    if version == "v2":
        return build_v2(src, dst, transport)
    raise ValueError(f"PROXY protocol version must be 'v1' or 'v2', not {version!r}")


def build_v1(src: Address | None, dst: Address | None) -> bytes:
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s, d = _same_family(s, d)
    proto = "TCP4" if s.version == 4 else "TCP6"
    return f"PROXY {proto} {s} {d} {src[1]} {dst[1]}\r\n".encode("ascii")


def build_v2(src: Address | None, dst: Address | None, transport: str = "tcp") -> bytes:
    if src is None or dst is None:
        return _V2_HEAD.pack(V2_SIGNATURE, 0x20, 0x00, 0)
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s, d = _same_family(s, d)
    proto = 0x1 if transport == "tcp" else 0x2
    if s.version == 4:
        body = _V2_INET.pack(s.packed, d.packed, src[1], dst[1])
        fam = 0x10 | proto
    else:
        body = _V2_INET6.pack(s.packed, d.packed, src[1], dst[1])
        fam = 0x20 | proto
    return _V2_HEAD.pack(V2_SIGNATURE, 0x21, fam, len(body)) + body


def _same_family(
    s: ipaddress.IPv4Address | ipaddress.IPv6Address, d: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """A dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d``: write both as IPv4
    when that is possible, else both as IPv6 (the header has one family)."""
    def v4(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
        if isinstance(a, ipaddress.IPv4Address):
            return a
        return a.ipv4_mapped

    s4, d4 = v4(s), v4(d)
    if s4 is not None and d4 is not None:
        return s4, d4

    def v6(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
        return a if isinstance(a, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{a}")

    return v6(s), v6(d)

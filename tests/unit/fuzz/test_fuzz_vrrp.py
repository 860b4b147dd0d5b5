"""Fuzz: the VRRP packet parser (pyvs/ha/packet.py).

Round trip: decode(encode(advert)) == advert for v2 and v3, IPv4 and IPv6, up to 255
addresses; any single-byte change of an encoded packet is caught (PacketError) or
decodes to an advert that encodes back to those bytes. Random payloads and datagrams
(decode, validate, parse_ipv4): PacketError or a result, never another exception.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from pyvs.ha import packet

from .oracles import SRC4, SRC6, check_vrrp_bytes, fuzz

v4: st.SearchStrategy[packet.IPAddress] = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6: st.SearchStrategy[packet.IPAddress] = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def adverts(draw: st.DrawFn) -> packet.Advert:
    version = draw(st.sampled_from([2, 3]))
    family = 4 if version == 2 else draw(st.sampled_from([4, 6]))
    addrs = draw(st.lists(v4 if family == 4 else v6, min_size=1, max_size=draw(st.sampled_from([3, 255]))))
    if version == 2:
        auth_type, auth = draw(st.sampled_from([(packet.AUTH_NONE, b"\0" * 8), (packet.AUTH_PASS, b"secret\0\0")]))
        return packet.Advert(2, draw(st.integers(1, 255)), draw(st.integers(0, 255)), 100 * draw(st.integers(1, 255)),
                             tuple(addrs), auth_type, auth)
    return packet.Advert(3, draw(st.integers(1, 255)), draw(st.integers(0, 255)), draw(st.integers(1, 4095)),
                         tuple(addrs))


def _ends(adv: packet.Advert) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return (SRC4, packet.GROUP_V4) if adv.family == 4 else (SRC6, packet.GROUP_V6)


@fuzz(200)
@given(adverts(), st.integers(0, 2000), st.integers(1, 255))
def test_round_trip_and_one_byte_changes(adv: packet.Advert, at: int, flip: int) -> None:
    src, dst = _ends(adv)
    wire = packet.encode(adv, src, dst)
    assert packet.decode(wire, src, dst, adv.family) == adv
    check_vrrp_bytes(wire)
    bad = bytearray(wire)
    bad[at % len(bad)] ^= flip
    try:
        got = packet.decode(bytes(bad), src, dst, adv.family)
    except packet.PacketError:
        return
    # The checksum cannot catch every change (swapped 16-bit words, 0x0000 <-> 0xFFFF):
    # what decodes must at least be a consistent advert.
    assert packet.decode(packet.encode(got, src, dst), src, dst, adv.family) == got


@fuzz(600)
@given(st.binary(max_size=80))
def test_random_payloads(data: bytes) -> None:
    check_vrrp_bytes(data)


@fuzz(300)
@given(st.sampled_from([0x21, 0x31, 0x11, 0x32]), st.integers(0, 255), st.integers(0, 255), st.integers(0, 4),
       st.integers(0, 255), st.integers(0, 255), st.binary(max_size=72))
def test_near_valid_headers_with_a_fixed_checksum(vt: int, vrid: int, prio: int, count: int, b4: int, b5: int,
                                                  rest: bytes) -> None:
    """Random fields behind a correct checksum: the checks after the checksum run too."""
    for family, src, dst in ((4, SRC4, packet.GROUP_V4), (6, SRC6, packet.GROUP_V6)):
        body = struct.pack("!BBBBBBH", vt, vrid, prio, count, b4, b5, 0) + rest
        pseudo = packet.pseudo_header(src, dst, len(body)) if vt >> 4 == 3 else b""
        csum = packet.checksum(pseudo + body)
        wire = body[:6] + struct.pack("!H", csum) + body[8:]
        check_vrrp_bytes(wire)
        try:
            packet.decode(wire, src, dst, family)
        except packet.PacketError:
            pass


@fuzz(300)
@given(st.integers(0x40, 0x4F), st.integers(0, 80), st.integers(0, 255), st.binary(max_size=80))
def test_ipv4_datagrams(vihl: int, total: int, proto: int, rest: bytes) -> None:
    head = struct.pack("!BBHHHBBH", vihl, 0, total, 0, 0, 255, proto, 0) + SRC4.packed + packet.GROUP_V4.packed
    check_vrrp_bytes(head + rest)

"""The VRRP codec and receive checks, as data."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.ha.packet import (
    AUTH_PASS,
    GROUP_V4,
    GROUP_V6,
    Advert,
    Drop,
    Expect,
    PacketError,
    checksum,
    decode,
    encode,
    gratuitous_arp,
    neighbour_advert,
    parse_ipv4,
    password_data,
    validate,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
SRC4, SRC6 = V4("10.77.0.1"), V6("fe80::1")
VIP4, VIP6 = V4("10.77.0.100"), V6("fd77::100")


def slow_checksum(data: bytes) -> int:
    """An independent RFC 1071 sum, word by word, to check the fast one against."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) + data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def expect(**kw: object) -> Expect:
    base: dict[str, object] = {
        "version": 3, "vrid": 51, "family": 4, "interval": 100, "addresses": frozenset({VIP4}),
    }
    base.update(kw)
    return Expect(**base)  # type: ignore[arg-type]


def test_v3_ipv4_wire_layout_and_pseudo_header_checksum() -> None:
    raw = encode(Advert(3, 51, 200, 100, (VIP4,)), SRC4, GROUP_V4)
    assert raw[:6] == bytes([0x31, 51, 200, 1, 0x00, 100])
    assert raw[8:] == VIP4.packed
    pseudo = SRC4.packed + GROUP_V4.packed + bytes([0, 112]) + struct.pack("!H", len(raw))
    assert slow_checksum(pseudo + raw) == 0
    assert slow_checksum(raw) != 0  # the pseudo-header is really part of it


def test_v3_ipv6_checksum_uses_the_ipv6_pseudo_header() -> None:
    raw = encode(Advert(3, 7, 100, 4095, (VIP6,)), SRC6, GROUP_V6)
    assert len(raw) == 8 + 16
    assert struct.unpack("!H", raw[4:6])[0] == 4095
    pseudo = SRC6.packed + GROUP_V6.packed + struct.pack("!I", len(raw)) + bytes([0, 0, 0, 112])
    assert slow_checksum(pseudo + raw) == 0


def test_v2_layout_auth_and_checksum_without_pseudo_header() -> None:
    auth_type, data = password_data("secret")
    assert (auth_type, data) == (AUTH_PASS, b"secret\0\0")
    raw = encode(Advert(2, 51, 150, 300, (VIP4,), auth_type, data), SRC4, GROUP_V4)
    assert raw[:6] == bytes([0x21, 51, 150, 1, AUTH_PASS, 3])
    assert raw[-8:] == b"secret\0\0"
    assert slow_checksum(raw) == 0


@settings(max_examples=200, derandomize=True)
@given(st.binary(max_size=64))
def test_fast_checksum_matches_the_reference(data: bytes) -> None:
    assert checksum(data) == slow_checksum(data)


addresses4 = st.lists(st.integers(0, 2**32 - 1).map(V4), min_size=1, max_size=20, unique=True)
addresses6 = st.lists(st.integers(0, 2**128 - 1).map(V6), min_size=1, max_size=8, unique=True)


@settings(max_examples=200, derandomize=True)
@given(
    version=st.sampled_from([2, 3]),
    vrid=st.integers(1, 255),
    prio=st.integers(0, 255),
    secs=st.integers(1, 255),
    cs=st.integers(1, 4095),
    addrs=addresses4,
)
def test_ipv4_roundtrip(version: int, vrid: int, prio: int, secs: int, cs: int, addrs: list[V4]) -> None:
    adv = Advert(version, vrid, prio, secs * 100 if version == 2 else cs, tuple(addrs))
    assert decode(encode(adv, SRC4, GROUP_V4), SRC4, GROUP_V4, 4) == adv


@settings(max_examples=100, derandomize=True)
@given(vrid=st.integers(1, 255), prio=st.integers(0, 255), cs=st.integers(1, 4095), addrs=addresses6)
def test_ipv6_roundtrip(vrid: int, prio: int, cs: int, addrs: list[V6]) -> None:
    adv = Advert(3, vrid, prio, cs, tuple(addrs))
    assert decode(encode(adv, SRC6, GROUP_V6), SRC6, GROUP_V6, 6) == adv


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=80), st.sampled_from([4, 6]))
def test_garbage_only_ever_raises_packet_error(data: bytes, family: int) -> None:
    src, dst = (SRC4, GROUP_V4) if family == 4 else (SRC6, GROUP_V6)
    try:
        decode(data, src, dst, family)
    except PacketError:
        pass


def good(**kw: object) -> bytes:
    fields: dict[str, object] = {"version": 3, "vrid": 51, "priority": 100, "interval": 100, "addresses": (VIP4,)}
    fields.update(kw)
    return encode(Advert(**fields), SRC4, GROUP_V4)  # type: ignore[arg-type]


def reason(payload: bytes, ttl: int = 255, src: V4 = SRC4, **kw: object) -> Drop:
    with pytest.raises(PacketError) as info:
        validate(payload, src, GROUP_V4, ttl, expect(**kw))
    return info.value.reason


def test_a_good_advert_passes() -> None:
    rx = validate(good(), SRC4, GROUP_V4, 255, expect())
    assert rx.advert.priority == 100 and rx.addresses_match and rx.source == SRC4


def test_ttl_must_be_255() -> None:
    assert reason(good(), ttl=254) is Drop.TTL


def test_version_must_match_the_instance() -> None:
    v2 = encode(Advert(2, 51, 100, 100, (VIP4,)), SRC4, GROUP_V4)
    assert reason(v2) is Drop.VERSION
    bad = bytes([0x41]) + good()[1:]
    assert reason(bad) is Drop.VERSION


def test_type_must_be_advertisement() -> None:
    assert reason(bytes([0x32]) + good()[1:]) is Drop.TYPE


def test_lengths_are_exact() -> None:
    assert reason(good()[:7]) is Drop.LENGTH
    assert reason(good() + b"\0\0\0\0") is Drop.LENGTH
    assert reason(good()[:3] + bytes([2]) + good()[4:]) is Drop.LENGTH  # count says 2, one is there


def test_checksum_is_verified_including_the_pseudo_header() -> None:
    raw = good()
    assert reason(raw[:9] + bytes([raw[9] ^ 1]) + raw[10:]) is Drop.CHECKSUM
    with pytest.raises(PacketError) as info:  # same bytes, other destination: the pseudo-header differs
        validate(raw, SRC4, V4("10.77.0.2"), 255, expect())
    assert info.value.reason is Drop.CHECKSUM


def test_other_vrid_is_dropped() -> None:
    assert reason(good(vrid=52)) is Drop.VRID


def test_v2_authentication_and_interval_rule() -> None:
    t, data = password_data("secret")
    kw = {"version": 2, "interval": 100, "auth_type": t, "auth_data": data}
    ok = encode(Advert(2, 51, 100, 100, (VIP4,), t, data), SRC4, GROUP_V4)
    assert validate(ok, SRC4, GROUP_V4, 255, expect(**kw)).advert.priority == 100
    wrong_pass = encode(Advert(2, 51, 100, 100, (VIP4,), t, b"guess\0\0\0"), SRC4, GROUP_V4)
    assert reason(wrong_pass, **kw) is Drop.AUTH
    no_auth = encode(Advert(2, 51, 100, 100, (VIP4,)), SRC4, GROUP_V4)
    assert reason(no_auth, **kw) is Drop.AUTH
    slower = encode(Advert(2, 51, 100, 200, (VIP4,), t, data), SRC4, GROUP_V4)
    assert reason(slower, **kw) is Drop.INTERVAL


def test_v3_interval_may_differ_from_ours() -> None:
    rx = validate(good(interval=250), SRC4, GROUP_V4, 255, expect())
    assert rx.advert.interval == 250


def test_other_addresses_are_dropped_unless_from_the_owner() -> None:
    other = (V4("10.77.0.101"),)
    assert reason(good(addresses=other)) is Drop.ADDRESSES
    assert reason(good(addresses=(VIP4, *other))) is Drop.ADDRESSES
    rx = validate(good(addresses=other, priority=255), SRC4, GROUP_V4, 255, expect())
    assert not rx.addresses_match


def test_unicast_peers_and_own_packets() -> None:
    assert reason(good(), peers=frozenset({V4("10.77.0.9")})) is Drop.PEER
    assert reason(good(), own=frozenset({SRC4})) is Drop.OWN


def test_parse_ipv4_header() -> None:
    payload = good()
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 255, 112, 0, SRC4.packed,
                         GROUP_V4.packed)
    src, dst, ttl, body = parse_ipv4(header + payload + b"\0\0")  # Ethernet padding is cut by total length
    assert (src, dst, ttl, body) == (SRC4, GROUP_V4, 255, payload)
    with pytest.raises(PacketError):
        parse_ipv4(header[:9] + bytes([6]) + header[10:] + payload)


def test_advert_rejects_impossible_values() -> None:
    with pytest.raises(ValueError):
        Advert(2, 51, 100, 150, (VIP4,))  # v2 carries whole seconds
    with pytest.raises(ValueError):
        Advert(2, 51, 100, 100, (VIP6,))
    with pytest.raises(ValueError):
        Advert(3, 0, 100, 100, (VIP4,))
    with pytest.raises(ValueError):
        Advert(3, 1, 100, 100, (VIP4, VIP6))
    with pytest.raises(ValueError):
        password_data("ninechars")


def test_gratuitous_arp_frame() -> None:
    mac = bytes.fromhex("020000000001")
    frame = gratuitous_arp(mac, VIP4)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac and frame[28:32] == VIP4.packed and frame[38:42] == VIP4.packed


def test_unsolicited_neighbour_advert() -> None:
    mac = bytes.fromhex("020000000001")
    msg = neighbour_advert(mac, VIP6)
    kind, code, _, flags = struct.unpack("!BBHI", msg[:8])
    assert (kind, code) == (136, 0)
    assert flags == 0x20000000  # override, not solicited, not router
    assert msg[8:24] == VIP6.packed and msg[24:26] == b"\x02\x01" and msg[26:] == mac

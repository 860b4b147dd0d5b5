"""The PROXY protocol codec: round trips, every prefix is "need more", malformed input
is an error at once, and arbitrary bytes never raise anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.l4.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    build,
    build_v1,
    build_v2,
    parse,
)

V4 = (("192.0.2.1", 56324), ("198.51.100.7", 443))
V6 = (("2001:db8::1", 1), ("2001:db8::2", 65535))


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(("src", "dst"), [V4, V6])
def test_round_trip(version: str, src: tuple[str, int], dst: tuple[str, int]) -> None:
    header = build(version, src, dst)
    got = parse(header + b"payload")
    assert got == ProxyHeader(int(version[1]), src, dst, len(header))


def test_v1_text_is_the_spec_example() -> None:
    assert build_v1(*V4) == b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"


def test_v2_binary_layout() -> None:
    h = build_v2(*V4)
    assert h[:12] == V2_SIGNATURE
    assert h[12:16] == b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 address bytes
    assert len(h) == 28


@pytest.mark.parametrize("header", [build_v1(*V4), build_v2(*V4), build_v2(*V6), b"PROXY UNKNOWN\r\n"])
def test_every_proper_prefix_needs_more(header: bytes) -> None:
    for i in range(len(header)):
        assert parse(header[:i]) is None, i
    assert parse(header) is not None


def test_unknown_and_local_carry_no_address() -> None:
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == ProxyHeader(1, None, None, 35, "")
    local = build_v2(None, None)
    assert parse(local) == ProxyHeader(2, None, None, 16, "")


def test_v2_udp_and_tlvs_are_skipped() -> None:
    body = build_v2(*V4, transport="udp")
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV
    header = body[:14] + (12 + len(tlv)).to_bytes(2, "big") + body[16:] + tlv
    got = parse(header + b"x")
    assert got is not None and got.transport == "udp" and got.consumed == len(header)


def test_mapped_ipv4_is_written_as_ipv4() -> None:
    assert build_v1(("::ffff:10.0.0.1", 1), ("10.0.0.2", 2)) == b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01",  # a TLS ClientHello
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 80\r\n",  # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 ::1 ::2 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
    b"PROXY " + b"1" * 120,  # no CRLF within 107 bytes
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x31\x00\x00",  # AF_UNIX is not supported
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # too short for IPv4
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 block
])
def test_malformed_is_an_error(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_non_proxy_first_byte_fails_without_waiting() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(b"G")
    with pytest.raises(ProxyProtocolError):
        parse(b"\r\n\r\n\x00X")


def test_bad_version_name() -> None:
    with pytest.raises(ValueError):
        build("v3", *V4)


@settings(max_examples=400, derandomize=True)
@given(st.binary(max_size=120))
def test_fuzz_only_valid_results_or_protocol_errors(data: bytes) -> None:
    try:
        got = parse(data)
    except ProxyProtocolError:
        return
    if got is not None:
        assert 0 < got.consumed <= len(data)


@settings(max_examples=200, derandomize=True)
@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535), st.integers(0, 65535),
       st.sampled_from(["v1", "v2"]), st.binary(max_size=20))
def test_fuzz_round_trip(a: object, b: object, pa: int, pb: int, version: str, payload: bytes) -> None:
    header = build(version, (str(a), pa), (str(b), pb))
    got = parse(header + payload)
    assert got is not None and got.src == (str(a), pa) and got.dst == (str(b), pb)
    assert got.consumed == len(header)

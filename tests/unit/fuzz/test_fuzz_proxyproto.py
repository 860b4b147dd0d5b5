"""Fuzz: the PROXY protocol v1/v2 parser (pyvs/l4/proxyproto.py).

Round trip: parse(build(x) + payload) gives x back for IPv4, IPv6, mixed families
(written as one), TCP and UDP, LOCAL/UNKNOWN, and every proper prefix of a built header
asks for more (None). Random bytes, mutated headers and random v2 blocks: a header,
None or ProxyProtocolError and nothing else, stable as more bytes arrive (a refused
buffer never becomes acceptable, a header is not changed by what follows it) and the
same for bytes, bytearray and memoryview.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvs.l4 import proxyproto

from .oracles import check_proxy_bytes, check_proxy_round_trip, fuzz

ports = st.integers(0, 65535)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@fuzz(300)
@given(st.sampled_from(["v1", "v2"]), st.tuples(addresses, ports), st.tuples(addresses, ports),
       st.sampled_from(["tcp", "udp"]), st.binary(max_size=16), st.booleans())
def test_round_trip(version: str, src: tuple[str, int], dst: tuple[str, int], transport: str, payload: bytes,
                    unknown: bool) -> None:
    if unknown:
        check_proxy_round_trip(version, None, None, transport, payload)
    else:
        check_proxy_round_trip(version, src, dst, transport, payload)


@fuzz(500)
@given(st.binary(max_size=120))
def test_random_bytes(data: bytes) -> None:
    check_proxy_bytes(data)


@fuzz(500)
@given(st.sampled_from([b"PROXY ", proxyproto.V2_SIGNATURE]), st.binary(max_size=60))
def test_random_bytes_after_a_signature(prefix: bytes, data: bytes) -> None:
    check_proxy_bytes(prefix + data)


@st.composite
def v1_lines(draw: st.DrawFn) -> bytes:
    """v1 lines from pieces near the valid ones."""
    proto = draw(st.sampled_from([b"TCP4", b"TCP6", b"UNKNOWN", b"UDP4", b"tcp4", b""]))
    ips = [b"1.2.3.4", b"255.255.255.255", b"::1", b"::ffff:1.2.3.4", b"fe80::1%eth0", b"01.2.3.4", b"1.2.3",
           b"\xff", b"", b"2001:db8::"]
    port = [b"0", b"80", b"65535", b"65536", b"080", b"-1", b"+1", b"\xd9\xa1", b""]
    parts = [proto, draw(st.sampled_from(ips)), draw(st.sampled_from(ips)), draw(st.sampled_from(port)),
             draw(st.sampled_from(port))]
    parts = parts[: draw(st.integers(1, 6))]
    sep = draw(st.sampled_from([b" ", b"  ", b"\t"]))
    end = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"", b"\r\nGET / HTTP/1.1\r\n"]))
    return b"PROXY " + sep.join(parts) + end


@fuzz(400)
@given(v1_lines())
def test_v1_lines(data: bytes) -> None:
    check_proxy_bytes(data)


@fuzz(500)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 300), st.binary(max_size=300), st.booleans())
def test_v2_blocks(ver_cmd: int, fam: int, length: int, body: bytes, exact: bool) -> None:
    if exact:
        length = len(body)
    check_proxy_bytes(struct.pack("!12sBBH", proxyproto.V2_SIGNATURE, ver_cmd, fam, length) + body)


@fuzz(300)
@given(st.sampled_from(["v1", "v2"]), st.tuples(addresses, ports), st.tuples(addresses, ports),
       st.integers(0, 60), st.integers(0, 255))
def test_mutated_headers(version: str, src: tuple[str, int], dst: tuple[str, int], at: int, byte: int) -> None:
    header = bytearray(proxyproto.build(version, src, dst))
    header[at % len(header)] = byte
    check_proxy_bytes(bytes(header))
    check_proxy_bytes(bytes(header[: at % len(header)]))


def test_a_v1_line_with_a_bare_lf_is_refused() -> None:
    with pytest.raises(proxyproto.ProxyProtocolError):
        proxyproto.parse(b"PROXY UNKNOWN 1.2.3.4\n")  # passes today
    with pytest.raises(proxyproto.ProxyProtocolError):
        proxyproto.parse(b"PROXY UNKNOWN 1.2.3.4\n\r\nGET / HTTP/1.1\r\n")  # accepted, consumed=24

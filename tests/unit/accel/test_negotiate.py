"""Accept-Encoding negotiation (RFC 9110 12.5.3) against the server's preference order."""

from __future__ import annotations

import pytest

from pyvs.accel.negotiate import Negotiator, choose, parse_accept_encoding

OFFER = ("br", "zstd", "gzip")


@pytest.mark.parametrize(("value", "want"), [
    (b"gzip, deflate, br, zstd", "br"),  # equal q: the server's order
    (b"gzip, deflate", "gzip"),
    (b"gzip;q=1.0, br;q=0.9", "gzip"),
    (b"br;q=0, gzip;q=0.1", "gzip"),
    (b"*", "br"),
    (b"*;q=0.5, zstd", "zstd"),
    (b"br;q=0, *;q=0.3", "zstd"),
    (b"gzip;q=0", None),
    (b"identity", None),
    (b"deflate", None),
    (b"x-gzip", "gzip"),
    (b"GZIP", "gzip"),
    (b"gzip;q=2, br;q=abc, zstd;q=0.2", "zstd"),  # malformed weights skip their member
    (b" , ;q=1, gzip ", "gzip"),
    (b"", None),
    (None, None),
])
def test_choose(value: bytes | None, want: str | None) -> None:
    assert choose(OFFER, value) == want


def test_server_order_decides_ties() -> None:
    assert choose(("gzip", "br"), b"br, gzip") == "gzip"


def test_parse_keeps_the_better_weight_of_a_repeated_coding() -> None:
    assert parse_accept_encoding(b"gzip;q=0.1, gzip;q=0.8") == {"gzip": 0.8}


def test_memo_is_bounded() -> None:
    n = Negotiator(OFFER)
    for i in range(1000):
        n(b"gzip;q=0.%d" % (i % 10) + b", x%d" % i)
    assert len(n.memo) <= 256
    assert n(b"br") == "br"

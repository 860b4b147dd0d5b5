"""Streaming encoders: any split of the input decodes to the same bytes, each piece is
flushed (decodable up to that point), and the eligibility rules of the filter."""

from __future__ import annotations

import gzip
import random
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.accel.compress import Compression, CompressStats, new_stage
from pyvs.config.accel_schema import Compress
from pyvs.http.h1 import parse_response_head

DECODE = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
}


def body(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return bytes(rnd.choice(b"abcdefgh \n") for _ in range(n))


@pytest.mark.parametrize("alg", ["gzip", "br", "zstd"])
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 20_000), max_size=8))
def test_any_split_round_trips(alg: str, cuts: list[int]) -> None:
    data = body(20_000)
    stats = CompressStats()
    stage = new_stage(alg, 3 if alg != "gzip" else 6, stats)
    points = [*sorted(set(cuts)), len(data)]
    out, prev = b"", 0
    for p in points:
        out += stage.feed(data[prev:p], False)
        prev = p
    out += stage.feed(b"", True)
    assert DECODE[alg](out) == data
    assert stats.bytes_in == len(data) and stats.bytes_out == len(out)


def test_each_read_is_flushed() -> None:
    """What the client has after each piece decodes to everything fed so far."""
    stage = new_stage("gzip", 6)
    d = zlib.decompressobj(31)
    for i in range(5):
        piece = body(3000, seed=i)
        assert d.decompress(stage.feed(piece, False)) == piece


def test_empty_body() -> None:
    for alg in DECODE:
        assert DECODE[alg](new_stage(alg, 1).feed(b"", True)) == b""


@pytest.mark.parametrize(("lines", "status", "method", "ok"), [
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\n", b"200 OK", b"GET", True),
    (b"Content-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n", b"200 OK", b"GET", True),
    (b"Content-Type: TEXT/CSS\r\nContent-Length: 1000\r\n", b"404 Not Found", b"GET", True),
    (b"Content-Type: text/html\r\nContent-Length: 100\r\n", b"200 OK", b"GET", False),  # min_size
    (b"Content-Type: image/png\r\nContent-Length: 1000\r\n", b"200 OK", b"GET", False),
    (b"Content-Length: 1000\r\n", b"200 OK", b"GET", False),  # no type
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\nContent-Encoding: gzip\r\n", b"200 OK", b"GET", False),
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\nContent-Encoding: identity\r\n", b"200 OK", b"GET", True),
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\nCache-Control: public, no-transform\r\n", b"200 OK",
     b"GET", False),
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\nContent-Range: bytes 0-999/5000\r\n", b"206 Partial",
     b"GET", False),
    (b"Content-Type: text/html\r\n", b"204 No Content", b"GET", False),
    (b"Content-Type: text/html\r\n", b"304 Not Modified", b"GET", False),
    (b"Content-Type: text/html\r\nContent-Length: 1000\r\n", b"200 OK", b"HEAD", False),
    (b"Content-Type: application/json\r\nContent-Length: 1000\r\n", b"200 OK", b"GET", True),
])
def test_eligibility(lines: bytes, status: bytes, method: bytes, ok: bool) -> None:
    f = Compression(Compress(types=["text/*", "application/json"], min_size=256))
    rh = parse_response_head(b"HTTP/1.1 " + status + b"\r\n" + lines + b"\r\n", head_request=method == b"HEAD")
    assert f.eligible(method, rh) is ok


def test_star_type_takes_anything() -> None:
    f = Compression(Compress(types=["*"]))
    rh = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", head_request=False)
    assert f.eligible(b"GET", rh)


def test_config_rules() -> None:
    with pytest.raises(ValueError, match="gzip is listed twice"):
        Compress(algorithms=["gzip", "gzip"])
    with pytest.raises(ValueError, match=r"level.br: expected 0-11, got 12"):
        Compress(level={"br": 12})
    with pytest.raises(ValueError, match="expected a media type"):
        Compress(types=["html"])
    c = Compress(level={"zstd": 19})
    assert c.level_of("zstd") == 19 and c.level_of("gzip") == 6 and c.level_of("br") == 4


def test_accel_keys_are_for_http_listeners() -> None:
    from pyvs.config.loader import load_text

    text = ("listeners: [{name: t, mode: tcp, bind: ['127.0.0.1:1'], backend: b, buffer_response: 1m}]\n"
            "backends: [{name: b, servers: [{name: s, address: '127.0.0.1:2'}]}]\n")
    with pytest.raises(Exception, match="buffer_response: for http listeners"):
        load_text(text)
    text = ("listeners: [{name: w, bind: ['127.0.0.1:1'], routes: [{respond: {status: 200}, cache: {}}]}]\n"
            "backends: []\n")
    with pytest.raises(Exception, match="cache: only for a route with a backend"):
        load_text(text)

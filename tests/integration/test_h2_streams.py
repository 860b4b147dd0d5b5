"""HTTP/2 end to end, the parts of docs/http2.md added with the lean codec: response
trailers of an HTTP/1.1 server reaching an h2 client, a stream over
max_concurrent_streams refused alone (REFUSED_STREAM, RFC 9113 5.1.2), and the
HTTP/2 counters in /status and /metrics. A raw h2 client (tests/integration/test_h2_limits.py)
drives what curl cannot."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, RawBackend, curl, free_port, read_head
from tests.integration.test_h2_limits import ENHANCE_YOUR_CALM, Client

TRAILERS_RESPONSE = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n"
                     b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n"
                     b"X-Checksum: abc123\r\nGrpc-Status: 0\r\n\r\n")


async def chunked_with_trailers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Every request on the connection: a chunked response with two trailer fields."""
    while True:
        try:
            await read_head(r)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        w.write(TRAILERS_RESPONSE)
        await w.drain()


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.web = Backend(lt, "web")
        self.raw = RawBackend(lt, chunked_with_trailers)
        self.port, self.small, self.trail = free_port(), free_port(), free_port()
        cfg: dict[str, Any] = {
            "listeners": [
                {"name": "h2c", "bind": [f"127.0.0.1:{self.port}"], "http2": True, "backend": "web"},
                {"name": "two", "bind": [f"127.0.0.1:{self.small}"], "http2": True, "backend": "web",
                 "http2_limits": {"max_concurrent_streams": 2}},
                {"name": "trailers", "bind": [f"127.0.0.1:{self.trail}"], "http2": True, "backend": "raw"},
            ],
            "backends": [{"name": "web", "servers": [{"name": "w1", "address": self.web.address}]},
                         {"name": "raw", "servers": [{"name": "r1", "address": self.raw.address}]}],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def close(self) -> None:
        self.pyvs.stop()
        self.web.close()
        self.raw.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("h2streams"))
    yield e
    e.close()
    log = e.pyvs.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-5000:]


def test_http11_response_trailers_reach_the_h2_client(env: Env) -> None:
    cl = Client(env.trail)
    try:
        sids = [cl.get("/t"), cl.get("/t")]
        cl.pump(lambda: all(s in cl.ended for s in sids))
        for sid in sids:
            assert cl.status[sid] == b"200" and bytes(cl.bodies[sid]) == b"hello world"
            assert cl.trailers[sid] == [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]
    finally:
        cl.close()
    # HTTP/1.1 clients still get them in the chunked body, curl over h2 sees the body whole
    r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{env.trail}/t")
    assert r.returncode == 0 and r.stdout == b"hello world", r.stderr


def test_stream_over_the_limit_is_refused_and_the_connection_goes_on(env: Env) -> None:
    cl = Client(env.small)  # opens its streams before it has read pyvs's SETTINGS (limit 2)
    try:
        slow = [cl.get("/slow?delay=0.5") for _ in range(2)]
        extra = cl.get("/name")
        cl.pump(lambda: extra in cl.resets or extra in cl.ended)
        assert cl.resets.get(extra) == 7  # REFUSED_STREAM: the client may retry it
        cl.pump(lambda: all(s in cl.ended for s in slow))
        assert all(bytes(cl.bodies[s]) == b"slow web" for s in slow)
        again = cl.get("/name")  # the same connection serves the next one
        cl.pump(lambda: again in cl.ended)
        assert bytes(cl.bodies[again]) == b"web" and cl.goaway is None
    finally:
        cl.close()


def test_h2_counters_in_status_and_metrics(env: Env) -> None:
    before = env.pyvs.status()["totals"]
    cl = Client(env.small)
    try:
        sids = [cl.get("/slow?delay=0.3") for _ in range(3)]  # the third is refused
        cl.pump(lambda: sids[2] in cl.resets and all(s in cl.ended for s in sids[:2]))
        reset = cl.get("/slow?delay=1", end=True)
        cl.c.reset_stream(reset, 8)  # CANCEL
        cl.send()
    finally:
        cl.close()
    flood = Client(env.port)
    try:
        for i in range(600):  # over max_control_frames (500)
            flood.c.ping(b"%08d" % i)
        flood.send()
        flood.pump(lambda: flood.goaway is not None)
        assert flood.goaway is not None and flood.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        flood.close()

    def grew(st: dict[str, Any]) -> bool:
        t = st["totals"]
        return (t["h2_connections"] - before["h2_connections"] >= 2
                and t["h2_connections_closed"] - before["h2_connections_closed"] >= 2
                and t["h2_streams"] - before["h2_streams"] >= 3
                and t["h2_streams_refused"] - before["h2_streams_refused"] >= 1
                and t["h2_resets_received"] - before["h2_resets_received"] >= 1
                and t["h2_flood_control"] - before["h2_flood_control"] >= 1
                and t["h2_goaways"] - before["h2_goaways"] >= 1)

    env.pyvs.wait_status(grew, timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{env.pyvs.admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for name in ("h2_connections", "h2_streams", "h2_streams_refused", "h2_goaways", "h2_resets_received",
                 "h2_flood_resets", "h2_flood_control", "h2_flood_empty", "h2_flood_continuation"):
        assert re.search(rf"^pyvs_{name}_total \d+$", text, re.M), name
    m = re.search(r"^pyvs_h2_connections (\d+)$", text, re.M)
    assert m is not None and int(m.group(1)) >= 0
    assert int(re.search(r"^pyvs_h2_flood_control_total (\d+)$", text, re.M).group(1)) >= 1  # type: ignore[union-attr]


def test_malformed_requests_are_refused_on_their_stream(env: Env) -> None:
    """What the h2 library used to refuse for pyvs (RFC 9113 8.1.1, 8.2.2, 8.3) is now
    pyvs's own check: 400 or RST_STREAM on the one stream, the connection goes on."""
    cl = Client(env.port, validate=False)
    try:
        base = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/upload")]
        sent = {
            "connection-specific": cl.c.get_next_available_stream_id(),
        }
        cl.c.send_headers(sent["connection-specific"], [*base, (b"connection", b"close")], end_stream=True)
        sent["pseudo after regular"] = cl.c.get_next_available_stream_id()
        cl.c.send_headers(sent["pseudo after regular"], [*base[:3], (b"x-a", b"1"), base[3]], end_stream=True)
        sent["fine"] = cl.c.get_next_available_stream_id()
        cl.c.send_headers(sent["fine"], [base[1], base[0], *base[2:]], end_stream=True)  # pseudo order is free
        sent["length"] = cl.c.get_next_available_stream_id()
        cl.c.send_headers(sent["length"], [*base, (b"content-length", b"5")], end_stream=False)
        cl.c.send_data(sent["length"], b"0123456789", end_stream=True)  # announced 5, sends 10
        cl.send()
        cl.pump(lambda: all(s in cl.ended or s in cl.resets for s in sent.values()))
        assert cl.status.get(sent["connection-specific"]) == b"400"
        assert cl.status.get(sent["pseudo after regular"]) == b"400"
        assert cl.status.get(sent["fine"]) == b"200"
        assert cl.resets.get(sent["length"]) == 1 and sent["length"] not in cl.status  # PROTOCOL_ERROR
        ok = cl.get("/name")
        cl.pump(lambda: ok in cl.ended)
        assert bytes(cl.bodies[ok]) == b"web" and cl.goaway is None
    finally:
        cl.close()

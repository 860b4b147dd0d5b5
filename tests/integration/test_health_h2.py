"""Health checks of HTTP/2-only servers (issue 15): ``type: grpc`` (the gRPC health
checking protocol) against a real grpcio server, and ``type: http`` against an h2c
server, which answers an HTTP/1.1 check with a protocol error. Each state change is
read from /status as the supervisor sees it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from pyvs.health.h2check import health_request, serving_status
from tests.integration.harness import LoopThread, Pyvs, free_port


class HealthService:
    """grpc.health.v1.Health/Check by hand (raw bytes, no generated code)."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {"": 1, "app": 1}  # 1 SERVING, 2 NOT_SERVING

    def check(self, request: bytes, context: Any) -> bytes:
        name = request[2:].decode() if request[:1] == b"\x0a" else ""
        if name not in self.status:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {name!r}")
        return b"\x08" + bytes([self.status[name]])


def state(p: Pyvs, backend: str, server: str) -> dict[str, Any]:
    for b in p.status()["backends"]:
        if b["name"] == backend:
            for s in b["servers"]:
                if s["name"] == server:
                    return s["health"]  # type: ignore[no-any-return]
    raise AssertionError(f"no server {backend}/{server}")


def wait_state(p: Pyvs, backend: str, server: str, want: str, detail: str) -> None:
    p.wait_status(lambda st: any(
        s["name"] == server and s.get("health", {}).get("state") == want
        and detail in ((s["health"].get("last_check") or {}).get("detail") or "")
        for b in st["backends"] if b["name"] == backend for s in b["servers"]), 15)


@pytest.fixture()
def grpc_server() -> Iterator[tuple[HealthService, int]]:
    svc = HealthService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(svc.check)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpc.health.v1.Health",
                                                                          {"Check": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield svc, port
    server.stop(0)


def test_grpc_check_follows_the_serving_status(grpc_server: tuple[HealthService, int], tmp_path: Path) -> None:
    svc, port = grpc_server
    check = {"type": "grpc", "interval": "100ms", "rise": 1, "fall": 1, "timeout": "2s"}
    cfg: dict[str, Any] = {
        "listeners": [{"name": "g", "bind": [f"127.0.0.1:{free_port()}"], "http2": True, "backend": "g"}],
        "backends": [
            {"name": "g", "health": check, "servers": [
                {"name": "g1", "address": f"127.0.0.1:{port}", "proto": "h2"}]},
            {"name": "app", "health": {**check, "grpc_service": "app"}, "servers": [
                {"name": "a1", "address": f"127.0.0.1:{port}", "proto": "h2"}]},
            {"name": "other", "health": {**check, "grpc_service": "nosuch"}, "servers": [
                {"name": "o1", "address": f"127.0.0.1:{port}", "proto": "h2"}]},
        ],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    try:
        wait_state(p, "g", "g1", "UP", "SERVING")
        wait_state(p, "app", "a1", "UP", "SERVING")
        wait_state(p, "other", "o1", "DOWN", "grpc-status 5")  # NOT_FOUND
        svc.status["app"] = 2
        wait_state(p, "app", "a1", "DOWN", "NOT_SERVING")
        assert state(p, "g", "g1")["state"] == "UP"  # the server as a whole still serves
        svc.status["app"] = 1
        wait_state(p, "app", "a1", "UP", "SERVING")
    finally:
        p.stop()


class H2cServer:
    """A cleartext HTTP/2 server (prior knowledge) on the test loop: GET /health
    answers ``self.code``; it does not speak HTTP/1.1 at all."""

    def __init__(self, lt: LoopThread) -> None:
        self.code = 200
        self.lt = lt
        self.server = lt.run(asyncio.start_server(self.serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        w.write(conn.data_to_send())
        try:
            while data := await r.read(65536):
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:  # an HTTP/1.1 request, say
                    w.write(conn.data_to_send())
                    break
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        body = b"healthy" if self.code == 200 else b"sick"
                        conn.send_headers(ev.stream_id, [(":status", str(self.code)),
                                                         ("content-length", str(len(body)))])
                        conn.send_data(ev.stream_id, body, end_stream=True)
                w.write(conn.data_to_send())
        finally:
            w.close()

    def close(self) -> None:
        self.server.close()


def test_http_check_speaks_http2_to_an_h2c_server(loop_thread: LoopThread, tmp_path: Path) -> None:
    srv = H2cServer(loop_thread)
    check = {"type": "http", "path": "/health", "interval": "100ms", "rise": 1, "fall": 1, "timeout": "2s"}
    cfg: dict[str, Any] = {
        "listeners": [{"name": "w", "bind": [f"127.0.0.1:{free_port()}"], "backend": "h2"}],
        "backends": [
            {"name": "h2", "health": {**check, "expect_body": "healthy"}, "servers": [
                {"name": "s1", "address": f"127.0.0.1:{srv.port}", "proto": "h2c"}]},
            {"name": "h1", "health": check, "servers": [  # the same server, checked as HTTP/1.1
                {"name": "s1", "address": f"127.0.0.1:{srv.port}"}]},
        ],
    }
    p = Pyvs(cfg, tmp_path, workers=1)
    try:
        wait_state(p, "h2", "s1", "UP", "status 200 (h2)")
        wait_state(p, "h1", "s1", "DOWN", "")  # HTTP/1.1 gets nowhere with it
        srv.code = 503
        wait_state(p, "h2", "s1", "DOWN", "status 503")
    finally:
        p.stop()
        srv.close()


def test_health_messages_round_trip() -> None:
    assert health_request("") == b"\x00\x00\x00\x00\x00"
    assert health_request("app") == b"\x00\x00\x00\x00\x05\x0a\x03app"
    assert serving_status(b"\x00\x00\x00\x00\x02\x08\x01") == 1
    assert serving_status(b"\x00\x00\x00\x00\x00") == 0  # proto3 default: UNKNOWN
    assert serving_status(b"\x00\x00\x00\x00\x05\x12\x01x\x08\x02") == 2  # an unknown field skipped
    assert serving_status(b"\x01\x00\x00\x00\x02\x08\x01") is None  # compressed: refused
    assert serving_status(b"\x00\x00\x00\x00\x09\x08") is None  # truncated

"""gRPC through pyvs to an HTTP/2 server (``servers[].proto: h2``), end to end.

grpcio on both sides: the client speaks h2c to a pyvs listener with ``http2: true``,
pyvs speaks h2c to a grpcio server. Unary and bidirectional streaming calls, status
and trailing metadata (HTTP/2 trailers), a trailers-only error, a large message; and
an HTTP/1.1 client of the same server gets the trailers in the chunked body."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.harness import LoopThread, Pyvs, curl, free_port, pattern
from tests.unit.tls.pki import Pki

BIG = 3_000_000


def _unary(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-trailer", "yes"),))
    return request[::-1]


def _fail(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")
    return b""


def _big(request: bytes, context: Any) -> bytes:
    return pattern(BIG)


def _stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for r in requests:
        yield b"echo:" + r


class Env:
    def __init__(self, tmp: Path) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
            "Big": grpc.unary_unary_rpc_method_handler(_big),
            "Stream": grpc.stream_stream_rpc_method_handler(_stream),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        self.backend_port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.port = free_port()
        cfg: dict[str, Any] = {
            "listeners": [{"name": "grpc", "bind": [f"127.0.0.1:{self.port}"], "http2": True, "backend": "g"}],
            "backends": [{"name": "g", "servers": [
                {"name": "g1", "address": f"127.0.0.1:{self.backend_port}", "proto": "h2"}]}],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.channel.close()
        self.pyvs.stop()
        self.server.stop(0)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("grpc"))
    yield e
    e.close()
    log = e.pyvs.log.read_text()
    assert "Traceback" not in log, log[-5000:]


def test_unary_with_trailing_metadata(env: Env) -> None:
    call = env.channel.unary_unary("/test.Echo/Unary")
    for _ in range(5):  # several calls: streams of one pooled server connection
        resp, info = call.with_call(b"hello", timeout=10)
        assert resp == b"olleh"
        assert ("x-trailer", "yes") in tuple(info.trailing_metadata())
        assert info.code() == grpc.StatusCode.OK


def test_error_status_travels_in_trailers(env: Env) -> None:
    with pytest.raises(grpc.RpcError) as err:
        env.channel.unary_unary("/test.Echo/Fail")(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "nope"


def test_bidirectional_streaming(env: Env) -> None:
    call = env.channel.stream_stream("/test.Echo/Stream")
    got = list(call(iter([b"a", b"bb", b"ccc"] * 20), timeout=10))
    assert got == [b"echo:" + m for m in [b"a", b"bb", b"ccc"] * 20]


def test_large_message(env: Env) -> None:
    assert env.channel.unary_unary("/test.Echo/Big")(b"", timeout=20) == pattern(BIG)


def test_http11_client_gets_trailers_in_chunked_body(env: Env, tmp_path: Path) -> None:
    msg = b"ping"
    body = tmp_path / "frame"
    body.write_bytes(struct.pack(">BI", 0, len(msg)) + msg)  # gRPC length-prefixed message
    r = curl("--http1.1", "-i", "--raw", "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
             "--data-binary", f"@{body}", f"http://127.0.0.1:{env.port}/test.Echo/Unary")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert b"\r\ntransfer-encoding: chunked\r\n" in out.lower()
    assert b"grpc-status: 0\r\n" in out and b"x-trailer: yes\r\n" in out
    assert struct.pack(">BI", 0, 4) + b"gnip" in out


def test_server_down_is_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "g", "bind": [f"127.0.0.1:{port}"], "http2": True, "backend": "g"}],
        "backends": [{"name": "g", "retries": 0,
                      "servers": [{"name": "down", "address": f"127.0.0.1:{free_port()}", "proto": "h2c"}]}],
    }
    p = Pyvs(cfg, tmp_path_factory.mktemp("grpcdown"))
    try:
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "-o", "/dev/null",
                            "-w", "%{http_code}", f"http://127.0.0.1:{port}/x"], capture_output=True, timeout=30)
        assert r.stdout == b"502", r.stderr
    finally:
        p.stop()


def test_h2_over_tls_to_the_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    """proto h2 with tls: ALPN h2 to a gRPC server with a certificate (trustme)."""
    tmp = tmp_path_factory.mktemp("grpctls")
    pki = Pki(tmp / "pki")
    cert = pki.issue("grpc.test")
    creds = grpc.ssl_server_credentials([(Path(cert.key).read_bytes(), Path(cert.cert).read_bytes())])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_unary)}),))
    backend_port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "g", "bind": [f"127.0.0.1:{port}"], "http2": True, "backend": "g"}],
        "backends": [{"name": "g", "servers": [
            {"name": "g1", "address": f"127.0.0.1:{backend_port}", "proto": "h2",
             "tls": {"verify": True, "ca": pki.ca_pem, "sni": "grpc.test"}}]}],
    }
    p = Pyvs(cfg, tmp, workers=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        resp, info = channel.unary_unary("/test.Echo/Unary").with_call(b"tls", timeout=10)
        assert resp == b"slt" and ("x-trailer", "yes") in tuple(info.trailing_metadata())
    finally:
        channel.close()
        p.stop()
        server.stop(0)

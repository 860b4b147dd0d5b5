"""The short paths of the L7 proxy (a bodiless request on a pooled connection, a
response read whole) and the write batch they use: the same behaviour as the general
path, seen from real clients and a real server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Backend, LoopThread
from tests.integration.test_http_review import Recorder, _read_for, _read_response, _start, _talk


@pytest.fixture()
def rec(loop_thread: LoopThread) -> Iterator[Recorder]:
    r = Recorder(loop_thread)
    yield r
    r.close()


def test_keepalive_requests_reuse_one_server_connection_with_forwarding_fields(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for i in range(20):
                s.sendall(b"GET /n%d HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n" % i)
                assert _read_response(s) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        assert rec.lines == [b"GET /n%d HTTP/1.1" % i for i in range(20)]
        assert rec.connections == 1
        for head in rec.heads:
            assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in head
            assert b"\r\nX-Forwarded-Proto: http\r\n" in head
            assert b"\r\nX-Forwarded-Host: example.test\r\n" in head
            assert b"\r\nAccept: */*\r\n" in head
        st = pyvs.wait_status(lambda s: s["totals"]["requests"] >= 20)
        server = st["backends"][0]["servers"][0]
        assert server["requests"] == 20 and server["connections_reused"] == 19 and server["active"] == 0
    finally:
        pyvs.stop()


def test_half_close_right_after_the_request_still_gets_the_whole_response(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        for i in range(30):  # the FIN races the response through the batch
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /h%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                s.shutdown(socket.SHUT_WR)
                out, closed = _read_for(s, 3)
            assert closed, out
            assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok"), out
    finally:
        pyvs.stop()


def test_server_error_takes_the_general_path_and_is_counted(loop_thread: LoopThread, tmp_path: Path) -> None:
    failing = Recorder(loop_thread, answer=b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    pyvs, port = _start(tmp_path, [failing.address])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for _ in range(3):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_response(s) == b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
        st = pyvs.wait_status(lambda s: s["totals"]["requests"] >= 3)
        assert st["backends"][0]["servers"][0]["responses_5xx"] == 3
        assert failing.connections == 1  # a 5xx with keep-alive still returns the connection to the pool
    finally:
        pyvs.stop()
        failing.close()


def test_pipelined_good_then_bad_request_answers_in_order(rec: Recorder, tmp_path: Path) -> None:
    pyvs, port = _start(tmp_path, [rec.address])
    try:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nBAD\r\n\r\n")
                out, closed = _read_for(s, 3)
            ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            assert out.startswith(ok + ok + b"HTTP/1.1 400 "), out
            assert closed
    finally:
        pyvs.stop()


def test_http10_chunked_request_is_answered_then_closed(loop_thread: LoopThread, tmp_path: Path) -> None:
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means the connection
    closes after the exchange, even when the client asked for keep-alive."""
    be = Backend(loop_thread, "b1")
    pyvs, port = _start(tmp_path, [be.address])
    try:
        head = b"POST /upload HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        out, closed = _talk(port, head + b"5\r\nhello\r\n0\r\n\r\n", wait=5)
        assert out.startswith(b"HTTP/1.1 200 "), out
        assert b"\r\nConnection: close\r\n" in out and b'"length": 5' in out, out
        assert closed
    finally:
        pyvs.stop()
        be.close()

"""Per-request Python cost of the L7 path without sockets (fake transports).

Feeds one keep-alive GET and one small response through H1Connection and a pooled
UpstreamConn per iteration; prints microseconds per request. Use it to see what a
change to the request path costs before running `make bench`:

    .venv/bin/python bench/micro.py [--profile]      (MICRO_POST=1: a small POST instead)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import uvloop

from pyvs.config.loader import load_text
from pyvs.l7.h1conn import H1Connection
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn

CFG = """
global: {workers: 1}
listeners: [{name: web, bind: ["127.0.0.1:1"], backend: be}]
backends: [{name: be, servers: [{name: s1, address: "127.0.0.1:2"}]}]
"""
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n"
# MICRO_POST=1: the http-post scenario's request (bench/post.lua), which takes the general path
POST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nContent-Type: application/json\r\n"
        b"Content-Length: 26\r\n\r\n" b'{"name":"widget","qty":12}')
RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 09:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 100
)


class FakeTransport:
    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.peer = peer
        self.out = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out += 1

    def writelines(self, data: Any) -> None:
        self.out += 1

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool:
        return False


class NoLoop:
    """Stands in for the loop of the worker's WriteBatch: run() flushes it itself."""

    def call_soon(self, callback: Any) -> None: ...


def main() -> None:
    loop = uvloop.new_event_loop()  # as in a worker: loop.time() is uvloop's
    rt = WorkerRuntime(load_text(CFG), 0, loop)
    rt.batch.loop = NoLoop()  # type: ignore[assignment]
    flush = rt.batch.flush
    lst = rt.listeners[0]
    server = rt.backends["be"].servers[0]
    fe = H1Connection(lst)
    fe.connection_made(FakeTransport(("127.0.0.1", 5555)))  # type: ignore[arg-type]
    conn = UpstreamConn(server, None, rt.sweeper)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    conn.idle_since = loop.time()  # just used: a POST may take it (UNSAFE_REUSE_MAX_IDLE)
    server.idle.append(conn)  # a pooled keep-alive connection
    n = int(os.environ.get("MICRO_N", "200000"))
    req = POST if os.environ.get("MICRO_POST") else REQ

    def run() -> None:
        for _ in range(n):
            fe.data_received(req)
            conn.data_received(RESP)
            flush()  # one loop iteration per request: the batch never holds more than two writes

    if "--profile" in sys.argv:
        import cProfile

        cProfile.runctx("run()", globals(), {"run": run})
        return
    t0 = time.perf_counter()
    run()
    dt = time.perf_counter() - t0
    assert rt.stats.requests == n, rt.stats.requests
    print(f"{dt / n * 1e6:.2f} us per request (Python path, no syscalls)")


if __name__ == "__main__":
    main()

"""Per-request Python cost of the HTTP/2 front end without sockets (fake transports).

What h2load does in the ``h2-small`` scenario, in memory: one h2c connection with
100 concurrent streams, each a small GET (its header block HPACK-indexed after the
first), each answered by a pooled HTTP/1.1 server connection with a small response.
One batch = 100 HEADERS frames in one read, 100 responses, one flush. Prints
microseconds per request; use it before and after a change to the h2 path:

    .venv/bin/python bench/h2_micro.py [--profile]      (H2_MICRO_BATCHES=N)
"""

from __future__ import annotations

import os
import struct
import sys
import time
from typing import Any

import hpack
import micro  # bench/micro.py (this directory is on sys.path when a script here runs)
import uvloop

from pyvs.config.loader import load_text
from pyvs.h2.detect import PREFACE, PriorKnowledge
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn

CFG = """
global: {workers: 1}
listeners: [{name: web, bind: ["127.0.0.1:1"], backend: be, http2: true,
             http2_limits: {max_concurrent_streams: 256}}]
backends: [{name: be, pool: {max_idle: 1024}, servers: [{name: s1, address: "127.0.0.1:2"}]}]
"""
STREAMS = 100
REQ = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:18080"),
       (b"user-agent", b"h2load nghttp2/1.52.0")]
RESP = micro.RESP


class FakeTransport(micro.FakeTransport):
    """bench/micro.py's, plus what a connection handed over to HTTP/2 uses."""

    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        super().__init__(peer)
        self.protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


class QuietLoop:
    """The connection's loop: its clock, and no deferred write (run() writes itself)."""

    def __init__(self, loop: Any) -> None:
        self.time = loop.time

    def call_soon(self, callback: Any) -> None: ...


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


def main() -> None:
    loop = uvloop.new_event_loop()
    rt = WorkerRuntime(load_text(CFG), 0, loop)
    rt.batch.loop = micro.NoLoop()  # type: ignore[assignment]
    flush = rt.batch.flush
    lst = rt.listeners[0]
    server = rt.backends["be"].servers[0]
    for _ in range(STREAMS):
        conn = UpstreamConn(server, None, rt.sweeper)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        server.idle.append(conn)
    batches = int(os.environ.get("H2_MICRO_BATCHES", "300"))
    enc = hpack.Encoder()
    first, again = enc.encode(REQ), enc.encode(REQ)
    # h2load's start: a big window for each stream and the connection
    settings = frame(4, 0, 0, struct.pack(">HI", 4, 2**30 - 1))
    start = PREFACE + settings + frame(8, 0, 0, struct.pack(">I", 2**30 - 65536))
    reads = []
    sid = 1
    for _ in range(batches):
        frames = []
        for _ in range(STREAMS):
            frames.append(frame(1, 5, sid, first if sid == 1 else again))  # END_HEADERS|END_STREAM
            sid += 2
        reads.append(b"".join(frames))
    t = FakeTransport(("127.0.0.1", 5555))
    fe = PriorKnowledge(lst)
    fe.connection_made(t)  # type: ignore[arg-type]
    fe.data_received(start)
    h2c = t.protocol
    h2c.loop = QuietLoop(loop)
    h2c.data_received(frame(4, 1, 0, b""))  # SETTINGS ack
    write = getattr(h2c, "write_now", None) or (lambda: None)

    def run() -> None:
        for data in reads:
            h2c.data_received(data)
            for st in list(h2c.streams.values()):
                up = st.ex.up
                if up is not None:
                    up.data_received(RESP)
            flush()
            write()

    if "--profile" in sys.argv:
        import cProfile

        cProfile.runctx("run()", globals(), {"run": run}, sort="tottime")
        return
    t0 = time.perf_counter()
    run()
    dt = time.perf_counter() - t0
    n = batches * STREAMS
    assert rt.stats.requests == n, (rt.stats.requests, n)
    print(f"{dt / n * 1e6:.2f} us per request (HTTP/2 front end, Python path, no syscalls)")


if __name__ == "__main__":
    main()

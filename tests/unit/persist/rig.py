"""A worker's L7 path over fake transports: real H1Connection, real UpstreamConn, no
sockets and no running loop (the same trick as bench/micro.py), so persistence is
tested through the exact hooks the proxy calls."""

from __future__ import annotations

import asyncio
from typing import Any

from pyvs.config.loader import load_text
from pyvs.l7.h1conn import H1Connection
from pyvs.persist.policy import Persistence, TablePersistence
from pyvs.runtime.worker import WorkerRuntime
from pyvs.upstream.connection import UpstreamConn
from pyvs.upstream.server import BackendRuntime

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def config(persistence: str, servers: int = 3, extra: str = "") -> str:
    lines = "\n".join(f'      - {{name: s{i}, address: "127.0.0.1:{9000 + i}"}}' for i in range(1, servers + 1))
    return (
        'listeners: [{name: web, bind: ["127.0.0.1:1"], backend: b}]\n'
        "backends:\n"
        "  - name: b\n"
        f"    persistence: {persistence}\n"
        f"{extra}"
        "    servers:\n"
        f"{lines}\n"
    )


class Rec:
    """A transport that records what is written."""

    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.peer = peer
        self.data = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, data: Any) -> None:
        for d in data:
            self.data += d

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Rig:
    def __init__(self, text: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = WorkerRuntime(load_text(text), 0, self.loop)
        self.backend: BackendRuntime = self.rt.backends["b"]
        self.sent: list[dict[str, Any]] = []
        self.rt.send = self.sent.append
        self.upstream: dict[str, Rec] = {}
        for s in self.backend.servers:
            self.upstream[s.name] = Rec()
            self._pool(s.name)

    @property
    def persist(self) -> Persistence:
        assert self.backend.persist is not None
        return self.backend.persist

    @property
    def table(self) -> TablePersistence:
        assert isinstance(self.backend.persist, TablePersistence)
        return self.backend.persist

    def _pool(self, name: str) -> None:
        server = self.backend.by_name[name]
        if not server.idle:
            conn = UpstreamConn(server, None, self.rt.sweeper)
            conn.connection_made(self.upstream[name])  # type: ignore[arg-type]
            server.idle.append(conn)

    def client(self, ip: str = "10.0.0.1") -> tuple[H1Connection, Rec]:
        fe = H1Connection(self.rt.listeners[0])
        t = Rec((ip, 40000))
        fe.connection_made(t)  # type: ignore[arg-type]
        return fe, t

    def exchange(self, fe: H1Connection, t: Rec, request: bytes,
                 response: bytes = OK) -> tuple[str | None, bytes, bytes]:
        """(server that got the request, the head it got, what the client got back)."""
        fe.data_received(request)
        got = [(name, rec.take()) for name, rec in self.upstream.items() if rec.data]
        if not got:
            return None, b"", t.take()
        assert len(got) == 1, got
        name, forwarded = got[0]
        server = self.backend.by_name[name]
        conn = fe.ex.up
        assert conn is not None and conn.server is server
        conn.data_received(response)
        self._pool(name)
        return name, forwarded, t.take()

    def get(self, fe: H1Connection, t: Rec, path: str = "/", headers: str = "",
            response: bytes = OK) -> tuple[str | None, bytes, bytes]:
        req = f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
        return self.exchange(fe, t, req, response)

    def set_eligible(self, name: str, eligible: bool) -> None:
        s = self.backend.by_name[name]
        self.backend.apply(eligible, s.target.weight, s)
        self._pool(name)

    def close(self) -> None:
        self.loop.close()


def set_cookies(resp: bytes) -> list[bytes]:
    head = resp.split(b"\r\n\r\n", 1)[0]
    return [line[len(b"Set-Cookie: "):] for line in head.split(b"\r\n") if line.lower().startswith(b"set-cookie:")]

"""Exchange corpus: today's HTTP/1.1 proxy behaviour pinned byte for byte.

Each case is a scripted exchange through a real pyvs process:

* a *scripted server* (an asyncio server in the test process) reads each request
  the proxy sends it (head, then body by Content-Length or chunked coding), answers
  with fixed bytes from the case's script, and records every byte it received on
  each connection;
* a *client* (a plain socket) writes fixed bytes to pyvs, possibly in several
  writes, waiting in between for responses or for given bytes; then reads until
  pyvs closes the connection, or, for a keep-alive exchange, until the expected
  number of responses has arrived, then half-closes and reads until pyvs closes.

What the client received, what every server connection received, and how the
connection ended are compared with a golden file ``corpus/<case>.txt``, which also
holds the case's inputs (config, client writes, server script) so that it reads
on its own and a stale golden (inputs changed) shows as a difference too.

Golden format: sections start with ``=== ``; bytes are shown one line per line of
the message, escaped (``\\r``, ``\\n``, ``\\t``, ``\\\\``, ``\\xNN`` for other
non-printable bytes and for a line-initial ``=`` or a trailing space), so that every
CRLF is visible; a last line without ``\\n`` holds the bytes after the last LF.

Normalisation (what legitimately varies between runs), applied before rendering:

* ports: every port the test allocated (the case's listener, its servers, the
  client's own port) is shown as ``<port:NAME>`` where it follows ``127.0.0.1:``,
  ``localhost:`` or a ``*.test`` host name (config addresses, a Host pyvs adds);
* ``Date:`` field values become ``<date>`` (the scripted servers send none, and
  pyvs's own responses have none today: this only guards a future change).

Every case runs on one shared pyvs process (one listener and its own backends per
case, so no pool or scheduler state crosses cases), started from the checkout this
file lives in (``harness.Pyvs``); the whole corpus runs once with ``workers: 1`` and
once with ``workers: 2`` against the same goldens (each case's exchange happens on
one client connection, so it is served by one worker either way).

Record mode: ``PYVS_CORPUS_RECORD=1 pytest tests/integration/test_exchange_corpus.py``
rewrites the goldens from the current behaviour (review them: ``git diff``).
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from tests.integration.harness import LoopThread, Pyvs

CORPUS = Path(__file__).with_name("corpus")
RECORD = os.environ.get("PYVS_CORPUS_RECORD") == "1"
CLIENT_TIMEOUT = 5.0


# ---------------------------------------------------------------- scripting
@dataclass(frozen=True)
class Reply:
    """What a scripted server does with one request (in the order requests arrive,
    across all its connections)."""

    data: bytes = b""
    interim: bytes = b""  # written as soon as the request head has arrived (before its body is read)
    close: bool = False  # close the connection after writing ``data``
    hangup: bool = False  # read the whole request, then close without answering
    silent: bool = False  # read the whole request, never answer (until pyvs closes)
    tunnel: bool = False  # after ``data``: echo every byte received as b"echo:" + bytes, close on EOF

    def describe(self) -> str:
        if self.hangup:
            return "reads the request, closes without answering"
        if self.silent:
            return "reads the request, never answers"
        what = "answers"
        if self.interim:
            what = "answers the head with the interim response, then after the body"
        if self.tunnel:
            what += ", then echoes tunnel bytes as echo:<bytes> until EOF, then closes"
        elif self.close:
            what += ", then closes"
        return what


class Refused:
    """A server address nothing listens on (connections refused)."""


REFUSED = Refused()
Script = tuple[Reply, ...] | Refused


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class SendFrom:
    """Bytes computed from what the client has received so far (e.g. a cookie)."""

    make: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Await:
    """Wait until ``n`` complete responses have arrived (since the connection began);
    responses whose index is in ``bodyless`` answer HEAD requests."""

    n: int
    bodyless: frozenset[int] = frozenset()


@dataclass(frozen=True)
class AwaitBytes:
    marker: bytes


Step = Send | SendFrom | Await | AwaitBytes


@dataclass(frozen=True)
class Case:
    name: str
    doc: str
    client: tuple[Step, ...]
    # "backend/server" -> that server's script. Server order within a backend is config order.
    servers: dict[str, Script]
    # How the exchange ends: "eof" reads until pyvs closes; "half-close" half-closes the
    # client socket after the last step (the responses awaited) and reads until pyvs closes.
    end: Literal["eof", "half-close"] = "half-close"
    listener: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra keys per backend
    server_cfg: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra keys per "backend/server"
    routes: tuple[tuple[dict[str, str], str], ...] = ()  # (match, backend); the default backend is "b"


# ---------------------------------------------------------------- framing helpers
def _fields(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out[name.strip().lower()] = value.strip()
    return out


def chunked_end(data: bytes, pos: int) -> int | None:
    """End offset of a chunked body starting at ``pos`` (trailers included), None if incomplete."""
    while True:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return None
        size = int(data[pos:nl].split(b";")[0], 16)
        pos = nl + 2
        if size == 0:
            while True:
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    return None
                if nl == pos:
                    return pos + 2
                pos = nl + 2
        if len(data) < pos + size + 2:
            return None
        pos += size + 2


def complete_responses(data: bytes, bodyless: frozenset[int]) -> int:
    """How many complete final responses ``data`` holds (1xx skipped; a 101 counts and
    ends the count: what follows is tunnel bytes; a close-delimited body never completes)."""
    n = 0
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return n
        head = data[pos:end]
        pos = end + 4
        status = int(head[9:12])
        if status == 101:
            return n + 1
        if 100 <= status < 200:
            continue
        f = _fields(head)
        if n in bodyless or status in (204, 304):
            pass
        elif b"chunked" in f.get(b"transfer-encoding", b"").lower():
            body_end = chunked_end(data, pos)
            if body_end is None:
                return n
            pos = body_end
        elif b"content-length" in f:
            pos += int(f[b"content-length"])
            if pos > len(data):
                return n
        else:
            return n
        n += 1


# ---------------------------------------------------------------- scripted server
class ScriptedServer:
    """One server of a case: answers requests from its script, records received bytes."""

    def __init__(self, path: str, script: Script) -> None:
        self.path = path
        self.script: tuple[Reply, ...] = () if isinstance(script, Refused) else script
        self.refused = isinstance(script, Refused)
        self.port = 0  # bound in start()
        self.hold: socket.socket | None = None
        self.conns: list[bytearray] = []
        self.requests = 0
        self.notes: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.refused:
            # Bound but not listening: connections are refused, and no other socket
            # (a pyvs listener of another case) can take the port meanwhile.
            self.hold = socket.socket()
            self.hold.bind(("127.0.0.1", 0))
            self.port = int(self.hold.getsockname()[1])
        else:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.hold is not None:
            self.hold.close()
            self.hold = None

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        log = bytearray()
        self.conns.append(log)
        buf = bytearray()

        async def more() -> bool:
            try:
                data = await r.read(65536)
            except ConnectionError:
                return False
            log.extend(data)
            buf.extend(data)
            return bool(data)

        try:
            while True:
                while (end := buf.find(b"\r\n\r\n")) < 0:
                    if not await more():
                        return
                head = bytes(buf[: end + 4])
                del buf[: end + 4]
                index = self.requests
                self.requests += 1
                if index >= len(self.script):
                    self.notes.append(f"unscripted request {index + 1}: closed without answering")
                    return
                reply = self.script[index]
                if reply.interim:
                    w.write(reply.interim)
                f = _fields(head)
                if b"chunked" in f.get(b"transfer-encoding", b"").lower():
                    while (body_end := chunked_end(bytes(buf), 0)) is None:
                        if not await more():
                            return
                    del buf[:body_end]
                elif b"content-length" in f:
                    length = int(f[b"content-length"])
                    while len(buf) < length:
                        if not await more():
                            return
                    del buf[:length]
                if reply.hangup:
                    return
                if reply.silent:
                    while await more():
                        pass
                    return
                w.write(reply.data)
                await w.drain()
                if reply.tunnel:
                    if buf:
                        w.write(b"echo:" + bytes(buf))
                        buf.clear()
                    while await more():
                        w.write(b"echo:" + bytes(buf))
                        buf.clear()
                    return
                if reply.close:
                    return
        finally:
            w.close()


# ---------------------------------------------------------------- client
@dataclass
class Outcome:
    sent: list[tuple[str, bytes]]  # ("write", bytes) or ("wait", description)
    received: bytes
    end: str
    client_port: int


def run_client(port: int, steps: tuple[Step, ...], end: str) -> Outcome:
    sent: list[tuple[str, bytes]] = []
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        client_port = int(sock.getsockname()[1])
        closed: str | None = None

        def recv() -> bool:
            nonlocal closed
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = "pyvs reset the connection"
                return False
            except TimeoutError:
                raise AssertionError(
                    f"client: nothing more from pyvs in {CLIENT_TIMEOUT}s; got so far: {bytes(received)!r}"
                ) from None
            if not data:
                closed = "pyvs closed the connection"
                return False
            received.extend(data)
            return True

        for step in steps:
            if closed is not None:
                sent.append(("wait", b"(remaining steps skipped: the connection is closed)"))
                break
            if isinstance(step, Send | SendFrom):
                data = step.data if isinstance(step, Send) else step.make(bytes(received))
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    closed = f"client write failed: {type(exc).__name__}"
                sent.append(("write", data))
            elif isinstance(step, Await):
                sent.append(("wait", b"client waits for %d complete response(s)" % step.n))
                while complete_responses(bytes(received), step.bodyless) < step.n:
                    if not recv():
                        break
            else:
                sent.append(("wait", b"client waits for the bytes " + step.marker))
                while step.marker not in received:
                    if not recv():
                        break
        if closed is None:
            if end == "half-close":
                sock.shutdown(socket.SHUT_WR)
                how = "client half-closed after its last step; then "
            else:
                how = ""
            while recv():
                pass
            assert closed is not None
            closed = how + closed
        else:
            closed = "before the client's last step: " + closed
    return Outcome(sent, bytes(received), closed, client_port)


# ---------------------------------------------------------------- rendering
_PRINTABLE = {b: chr(b) for b in range(0x20, 0x7F)}
_PRINTABLE.update({0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"})
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")


def render_bytes(data: bytes) -> list[str]:
    out = []
    for piece in _LINES.findall(data):
        s = "".join(_PRINTABLE.get(b, f"\\x{b:02x}") for b in piece)
        if s.startswith("="):
            s = "\\x3d" + s[1:]
        if s.endswith(" "):
            s = s[:-1] + "\\x20"
        out.append(s)
    return out


_DATE = re.compile(rb"(\r\nDate:[ \t]*)[^\r\n]*", re.IGNORECASE)


def normalise(data: bytes, ports: dict[int, str]) -> bytes:
    for port, name in ports.items():
        data = re.sub(rb"(127\.0\.0\.1|localhost|\.test):%d\b" % port, rb"\1:<port:" + name.encode() + b">", data)
    return _DATE.sub(rb"\1<date>", data)


CaseConfig = tuple[dict[str, Any], list[dict[str, Any]]]  # a case's listener, its backends


def case_config(case: Case, port: int, servers: dict[str, ScriptedServer]) -> CaseConfig:
    """The listener and backends of one case (names prefixed with the case's name)."""
    prefix = case.name + "."
    listener: dict[str, Any] = {"name": case.name, "bind": [f"127.0.0.1:{port}"]}
    if case.routes:
        listener["routes"] = [{"match": m, "backend": prefix + b} for m, b in case.routes]
    listener["backend"] = prefix + "b"
    listener.update(case.listener)
    order: list[str] = []
    for path in case.servers:
        b = path.split("/")[0]
        if b not in order:
            order.append(b)
    backends = []
    for b in order:
        srvs = [
            {"name": path.split("/")[1], "address": f"127.0.0.1:{srv.port}", **case.server_cfg.get(path, {})}
            for path, srv in servers.items()
            if path.split("/")[0] == b
        ]
        backends.append({"name": prefix + b, "servers": srvs, **case.backends.get(b, {})})
    return listener, backends


def render(case: Case, cfg: CaseConfig, servers: dict[str, ScriptedServer],
           outcome: Outcome, ports: dict[int, str]) -> str:
    lines = [f"# case: {case.name}"]
    lines += [f"# {ln}".rstrip() for ln in case.doc.strip().splitlines()]
    lines.append("# (format, normalisation, re-recording: see tests/integration/test_exchange_corpus.py)")
    listener, backends = cfg
    dumped = yaml.safe_dump({"listeners": [listener], "backends": backends}, sort_keys=False, width=200)
    lines.append("=== config (the case's part of the shared pyvs config)")
    lines += normalise(dumped.encode(), ports).decode().splitlines()
    writes = 0
    for kind, data in outcome.sent:
        if kind == "write":
            writes += 1
            lines.append(f"=== client -> pyvs (write {writes})")
            lines += render_bytes(normalise(data, ports))
        else:
            lines.append("=== " + "".join(render_bytes(data)))
    for path, srv in servers.items():
        if srv.refused:
            lines.append(f"=== {path} script: refuses connections (nothing listens on its port)")
            continue
        for i, reply in enumerate(srv.script, 1):
            lines.append(f"=== {path} script, request {i}: {reply.describe()}")
            if reply.interim:
                lines += render_bytes(reply.interim)
                lines.append(f"=== {path} script, request {i}: (final answer)")
            lines += render_bytes(reply.data)
    for path, srv in servers.items():
        if srv.refused:
            continue
        if not srv.conns:
            lines.append(f"=== pyvs -> {path}: no connection")
        for i, log in enumerate(srv.conns, 1):
            lines.append(f"=== pyvs -> {path} (connection {i})")
            lines += render_bytes(normalise(bytes(log), ports))
        for note in srv.notes:
            lines.append(f"=== {path}: {note}")
    lines.append("=== pyvs -> client")
    lines += render_bytes(normalise(outcome.received, ports))
    lines.append(f"=== end: {outcome.end}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- cases
H = b"Host: example.test\r\n"


def get(path: str = "/", *, host: bytes = H, extra: bytes = b"", method: bytes = b"GET",
        version: bytes = b"HTTP/1.1") -> bytes:
    return method + b" " + path.encode() + b" " + version + b"\r\n" + host + extra + b"\r\n"


def ok(body: bytes = b"ok", *, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    """A response with a Content-Length body; the body gets a final LF (the golden files read better)."""
    body += b"\n"
    return b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body) + extra \
        + b"\r\n" + body


def post(path: str, body: bytes, *, extra: bytes = b"") -> bytes:
    return b"POST " + path.encode() + b" HTTP/1.1\r\n" + H + b"Content-Type: application/x-www-form-urlencoded\r\n" \
        + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def set_cookie_echo(received: bytes) -> bytes:
    """The second request of the cookie case: carries the SERVERID cookie pyvs set."""
    m = re.search(rb"Set-Cookie: SERVERID=([^;\r]*)", received)
    value = m.group(1) if m else b"(none)"
    return get("/again", extra=b"Cookie: theme=dark; SERVERID=" + value + b"; lang=en\r\n")


CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
    b"6\r\nhello \r\n6;ext=1\r\nworld!\r\n0\r\nX-Digest: abc123\r\n\r\n"
)
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until close\n"
WS_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
WS_ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello-from-server"
)
FORWARDING_FIELDS = (
    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: public.test\r\n"
    b"Forwarded: for=203.0.113.7;proto=https\r\n"
)
S1 = "b/s1"

CASES: tuple[Case, ...] = (
    Case(
        "get_keepalive",
        "Two GETs one after the other on one keep-alive connection: both forwarded on one\n"
        "pooled server connection, each response passed through byte for byte.",
        (Send(get("/a")), Await(1), Send(get("/b", extra=b"Accept: */*\r\n")), Await(2)),
        {S1: (Reply(ok(b"first")), Reply(ok(b"second")))},
    ),
    Case(
        "pipelined_two_gets",
        "Two GETs pipelined in one write: answered in order.",
        (Send(get("/1") + get("/2")), Await(2)),
        {S1: (Reply(ok(b"one")), Reply(ok(b"two")))},
    ),
    Case(
        "pipelined_get_post",
        "A GET and a POST with a body pipelined in one write.",
        (Send(get("/1") + post("/submit", b"a=1&b=2")), Await(2)),
        {S1: (Reply(ok(b"got")), Reply(ok(b"posted", status=b"201 Created")))},
    ),
    Case(
        "http10_get_close",
        "HTTP/1.0 GET without Host and without keep-alive: forwarded as HTTP/1.1 with the\n"
        "server's address as Host; the response is sent as HTTP/1.1 with Connection: close.",
        (Send(b"GET /old HTTP/1.0\r\nUser-Agent: old/1.0\r\n\r\n"),),
        {S1: (Reply(ok(b"for 1.0")),)},
        end="eof",
    ),
    Case(
        "http10_get_keepalive",
        "HTTP/1.0 with Connection: keep-alive (kept open), then an HTTP/1.0 request without\n"
        "it (closed).",
        (
            Send(get("/a", version=b"HTTP/1.0", extra=b"Connection: keep-alive\r\n")),
            Await(1),
            Send(get("/b", version=b"HTTP/1.0")),
        ),
        {S1: (Reply(ok(b"kept")), Reply(ok(b"closing")))},
        end="eof",
    ),
    Case(
        "head",
        "HEAD: the response head announces a length but no body follows; the next request\n"
        "on the connection is still framed right.",
        (Send(get("/doc", method=b"HEAD")), Await(1, frozenset({0})), Send(get("/doc")),
         Await(2, frozenset({0}))),
        {S1: (Reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"),
              Reply(ok(b"hello world")))},
    ),
    Case(
        "post_content_length",
        "POST with a Content-Length body.",
        (Send(post("/form", b"name=pyvs&kind=proxy")), Await(1)),
        {S1: (Reply(ok(b"thanks")),)},
    ),
    Case(
        "chunked_request_with_trailers",
        "Chunked request body with a chunk extension and a trailer, head and body in two\n"
        "writes: forwarded raw (framing and trailers included).",
        (
            Send(b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
                 b"Trailer: X-Checksum\r\n\r\n"),
            Send(b"5\r\nhello\r\n6;part=2\r\n world\r\n0\r\nX-Checksum: 1234\r\n\r\n"),
            Await(1),
        ),
        {S1: (Reply(ok(b"stored")),)},
    ),
    Case(
        "expect_100_continue",
        "Expect: 100-continue: the server's 100 Continue is relayed, then the client sends\n"
        "the body.",
        (
            Send(b"PUT /file HTTP/1.1\r\nHost: example.test\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n"),
            AwaitBytes(b"100 Continue\r\n\r\n"),
            Send(b"file data"),
            Await(1),
        ),
        {S1: (Reply(ok(b"saved", status=b"201 Created"), interim=b"HTTP/1.1 100 Continue\r\n\r\n"),)},
    ),
    Case(
        "chunked_response_http11",
        "Chunked response (extension, trailer) to an HTTP/1.1 client: passed through as is.",
        (Send(get("/stream")), Await(1)),
        {S1: (Reply(CHUNKED_RESPONSE),)},
    ),
    Case(
        "chunked_response_http10",
        "Chunked response to an HTTP/1.0 client: decoded, delimited by closing.",
        (Send(get("/stream", version=b"HTTP/1.0")),),
        {S1: (Reply(CHUNKED_RESPONSE),)},
        end="eof",
    ),
    Case(
        "close_delimited_http11",
        "A response delimited by the server closing, to an HTTP/1.1 client: chunk-encoded,\n"
        "the client connection stays open.",
        (Send(get("/legacy")), Await(1)),
        {S1: (Reply(CLOSE_DELIMITED, close=True),)},
    ),
    Case(
        "close_delimited_http10",
        "A response delimited by the server closing, to an HTTP/1.0 client: delimited by\n"
        "closing too.",
        (Send(get("/legacy", version=b"HTTP/1.0")),),
        {S1: (Reply(CLOSE_DELIMITED, close=True),)},
        end="eof",
    ),
    Case(
        "status_204",
        "204 No Content (no body), then another request on the same connection.",
        (Send(get("/ping")), Await(1), Send(get("/next")), Await(2)),
        {S1: (Reply(b"HTTP/1.1 204 No Content\r\nX-Ping: pong\r\n\r\n"), Reply(ok(b"next")))},
    ),
    Case(
        "status_304",
        "304 Not Modified with an ETag and a Content-Length (no body), then another request.",
        (Send(get("/cached", extra=b'If-None-Match: "v1"\r\n')), Await(1), Send(get("/next")), Await(2)),
        {S1: (Reply(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 42\r\n\r\n'), Reply(ok(b"next")))},
    ),
    Case(
        "response_connection_close",
        "The server answers with Connection: close and closes; the client connection is\n"
        "kept, the next request opens a new server connection.",
        (Send(get("/a")), Await(1), Send(get("/b")), Await(2)),
        {S1: (Reply(ok(b"bye", extra=b"Connection: close\r\n"), close=True), Reply(ok(b"new connection")))},
    ),
    Case(
        "websocket_upgrade",
        "Upgrade: websocket answered 101: then a tunnel, bytes both ways; the client's\n"
        "half-close is passed on, the server's close ends the connection.",
        (Send(WS_REQUEST), AwaitBytes(b"hello-from-server"), Send(b"ping-from-client"),
         AwaitBytes(b"echo:ping-from-client")),
        {S1: (Reply(WS_ACCEPT, tunnel=True),)},
    ),
    Case(
        "upgrade_refused",
        "An upgrade request the server answers with a plain 200: the client connection is\n"
        "closed after the response (the client may already speak the other protocol).",
        (Send(WS_REQUEST),),
        {S1: (Reply(ok(b"no upgrade here")),)},
        end="eof",
    ),
    Case(
        "interim_103",
        "A 103 Early Hints interim response before the final one is relayed.",
        (Send(get("/page")), Await(1)),
        {S1: (Reply(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + ok(b"page")),)},
    ),
    Case(
        "bad_request_line",
        "A request line that is not HTTP: 400, closed; nothing reaches a server.",
        (Send(b"NOT A REQUEST\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "bad_header",
        "A field name with a space: 400, closed.",
        (Send(get("/", extra=b"Bad Header: x\r\n")),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "missing_host",
        "HTTP/1.1 without Host: 400, closed.",
        (Send(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "duplicate_content_length",
        "Two different Content-Length fields (smuggling): 400, closed.",
        (Send(b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "content_length_and_chunked",
        "Content-Length together with Transfer-Encoding: chunked (smuggling): refused, closed.",
        (Send(b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "oversized_head",
        "A request head larger than max_header_size (1024 here): 431, closed.",
        (Send(b"GET / HTTP/1.1\r\nHost: example.test\r\n"
              + b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 50) for i in range(20)) + b"\r\n"),),
        {S1: ()},
        end="eof",
        listener={"max_header_size": 1024},
    ),
    Case(
        "unsupported_transfer_encoding",
        "Transfer-Encoding: gzip, chunked: 501, closed.",
        (Send(b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "http2_version",
        "An HTTP/2.0 request line: refused (505 or 400), closed.",
        (Send(b"GET / HTTP/2.0\r\nHost: example.test\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "connect_method",
        "CONNECT: 405, closed.",
        (Send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"),),
        {S1: ()},
        end="eof",
    ),
    Case(
        "pipelined_good_then_bad",
        "A good GET pipelined with garbage: the GET is answered, then 400 and close.",
        (Send(get("/fine") + b"GARBAGE\r\n\r\n"),),
        {S1: (Reply(ok(b"fine")),)},
        end="eof",
    ),
    Case(
        "absolute_form_target",
        "An absolute-form request target (as sent to a forward proxy).",
        (Send(b"GET http://example.test/abs?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"), Await(1)),
        {S1: (Reply(ok(b"absolute")),)},
    ),
    Case(
        "split_writes",
        "A POST whose head and body arrive in five writes.",
        (
            Send(b"POST /split HTTP/1.1\r\nHo"),
            Send(b"st: example.test\r\nContent-Len"),
            Send(b"gth: 10\r\n\r"),
            Send(b"\nhello"),
            Send(b"world"),
            Await(1),
        ),
        {S1: (Reply(ok(b"joined")),)},
    ),
    Case(
        "http10_chunked_request",
        "HTTP/1.0 request with a chunked body (faulty framing, RFC 9112 6.1): forwarded,\n"
        "answered, then the connection closed.",
        (Send(b"POST /old HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),),
        {S1: (Reply(ok(b"done")),)},
        end="eof",
    ),
    Case(
        "backend_refused",
        "The only server refuses connections: 502 after the retries (the connection is\n"
        "kept: the request was complete).",
        (Send(get("/")), Await(1)),
        {S1: REFUSED},
    ),
    Case(
        "reused_connection_closed_get_retried",
        "The server closes a pooled connection as the second GET arrives on it without\n"
        "answering: the GET is sent again on a new connection.",
        (Send(get("/1")), Await(1), Send(get("/2")), Await(2)),
        {S1: (Reply(ok(b"one")), Reply(hangup=True), Reply(ok(b"two, retried")))},
    ),
    Case(
        "reused_connection_closed_post_502",
        "The server closes a pooled connection as a POST arrives on it without answering:\n"
        "the POST is not replayed; 502, closed.",
        (Send(get("/1")), Await(1), Send(post("/buy", b"item=1")),),
        {S1: (Reply(ok(b"one")), Reply(hangup=True))},
        end="eof",
    ),
    Case(
        "backend_500",
        "A 500 from the server is passed through; the connection stays usable.",
        (Send(get("/fail")), Await(1), Send(get("/after")), Await(2)),
        {S1: (Reply(ok(b"it broke", status=b"500 Internal Server Error")), Reply(ok(b"fine again")))},
    ),
    Case(
        "garbage_from_server",
        "A server answering something that is not HTTP: 502, closed.",
        (Send(get("/")),),
        {S1: (Reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close=True),)},
        end="eof",
    ),
    Case(
        "route_host_and_path_prefix",
        "Routing: Host api.test goes to backend api, a /static/ path to backend static,\n"
        "anything else to the default backend b; all on one client connection.",
        (
            Send(get("/v1/users", host=b"Host: API.test:8080\r\n")),
            Await(1),
            Send(get("/static/app.css", host=b"Host: www.test\r\n")),
            Await(2),
            Send(get("/index.html", host=b"Host: www.test\r\n")),
            Await(3),
        ),
        {"api/a1": (Reply(ok(b"api")),), "static/st1": (Reply(ok(b"static")),), S1: (Reply(ok(b"default")),)},
        routes=(({"host": "api.test"}, "api"), ({"path_prefix": "/static/"}, "static")),
    ),
    Case(
        "hop_by_hop_stripped",
        "Hop-by-hop fields (and fields named by Connection) removed both ways.",
        (
            Send(get("/hop", extra=b"Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n"
                                   b"TE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
                                   b"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Keep: yes\r\n")),
            Await(1),
        ),
        {S1: (Reply(ok(b"hop", extra=b"Connection: keep-alive, X-Internal\r\nX-Internal: secret\r\n"
                                   b"Keep-Alive: timeout=5, max=100\r\nProxy-Authenticate: Basic\r\n"
                                   b"Upgrade: foo\r\nX-Public: yes\r\n")),)},
    ),
    Case(
        "xff_untrusted_client",
        "Forwarding fields from an untrusted client are replaced with pyvs's own.",
        (Send(get("/who", extra=FORWARDING_FIELDS)), Await(1)),
        {S1: (Reply(ok(b"who")),)},
    ),
    Case(
        "xff_trusted_proxy",
        "Forwarding fields from a trusted proxy (127.0.0.0/8): X-Forwarded-For appended,\n"
        "X-Forwarded-Proto and -Host kept, Forwarded passed on.",
        (Send(get("/who", extra=FORWARDING_FIELDS)), Await(1)),
        {S1: (Reply(ok(b"who")),)},
        listener={"forwarded": {"trusted_proxies": ["127.0.0.0/8"]}},
    ),
    Case(
        "forwarded_and_via",
        "forwarded: true and via: true, for an HTTP/1.1 then an HTTP/1.0 request.",
        (Send(get("/v11")), Await(1), Send(get("/v10", version=b"HTTP/1.0"))),
        {S1: (Reply(ok(b"one")), Reply(ok(b"two")))},
        end="eof",
        listener={"forwarded": {"forwarded": True, "via": True}},
    ),
    Case(
        "persistence_cookie_insert",
        "Cookie persistence, insert mode: the first response sets SERVERID (server s1); the\n"
        "next request carries it, goes to s1 again and the cookie is removed before\n"
        "forwarding; a request without it goes round robin to s2 and gets s2's cookie.",
        (
            Send(get("/first")),
            Await(1),
            SendFrom(set_cookie_echo),
            Await(2),
            Send(get("/fresh")),
            Await(3),
        ),
        {S1: (Reply(ok(b"s1 first")), Reply(ok(b"s1 again"))), "b/s2": (Reply(ok(b"s2 fresh")),)},
        backends={"b": {"persistence": {"type": "cookie", "name": "SERVERID", "mode": "insert"}}},
    ),
    Case(
        "sorry_response",
        "No server up (its weight is 0): the configured sorry response, keep-alive, then\n"
        "with Connection: close from the client, the close variant.",
        (Send(get("/")), Await(1), Send(get("/", extra=b"Connection: close\r\n"))),
        {S1: ()},
        end="eof",
        backends={"b": {"sorry": {"status": 503, "body": "Down for maintenance.\n",
                                  "content_type": "text/plain"}}},
        server_cfg={S1: {"weight": 0}},
    ),
    Case(
        "no_server_503",
        "No server up and no sorry response configured: pyvs's own 503.",
        (Send(get("/")), Await(1)),
        {S1: ()},
        server_cfg={S1: {"weight": 0}},
    ),
    Case(
        "http10_server_response",
        "An HTTP/1.0 server (no keep-alive) answering an HTTP/1.1 client: the response is\n"
        "sent as HTTP/1.1 and the server connection is not reused.",
        (Send(get("/a")), Await(1), Send(get("/b")), Await(2)),
        {S1: (Reply(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nold\n", close=True),
              Reply(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nka!\n"))},
    ),
    Case(
        "backend_timeout_504",
        "The server reads the request and never answers: 504 after the server timeout\n"
        "(300 ms here); the client connection is kept.",
        (Send(get("/slow")), Await(1)),
        {S1: (Reply(silent=True),)},
        backends={"b": {"timeouts": {"server": "300ms"}}},
    ),
)


# ---------------------------------------------------------------- fixtures and test
def reserve_ports(n: int) -> list[socket.socket]:
    """``n`` distinct free ports, held by bound (not listening) SO_REUSEPORT sockets
    until pyvs has bound them too (its listeners use SO_REUSEPORT): no other socket,
    such as the harness's admin port, can take one of them meanwhile."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    return socks


@dataclass
class Running:
    pyvs: Pyvs
    ports: dict[str, int]  # case -> listener port
    servers: dict[str, dict[str, ScriptedServer]]  # case -> path -> server
    configs: dict[str, CaseConfig]


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def corpus_pyvs(
    request: pytest.FixtureRequest, loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    workers = int(request.param)
    ports: dict[str, int] = {}
    servers: dict[str, dict[str, ScriptedServer]] = {}
    configs: dict[str, CaseConfig] = {}
    listeners: list[dict[str, Any]] = []
    backends: list[dict[str, Any]] = []
    for case in CASES:
        servers[case.name] = {path: ScriptedServer(path, script) for path, script in case.servers.items()}

    async def start() -> None:
        for by_path in servers.values():
            for srv in by_path.values():
                await srv.start()

    async def stop() -> None:
        for by_path in servers.values():
            for srv in by_path.values():
                await srv.stop()

    loop_thread.run(start())  # servers bind port 0; the listener ports are chosen after them
    held = reserve_ports(len(CASES))
    for case, sock in zip(CASES, held, strict=True):
        ports[case.name] = int(sock.getsockname()[1])
        configs[case.name] = case_config(case, ports[case.name], servers[case.name])
        listeners.append(configs[case.name][0])
        backends += configs[case.name][1]
    cfg = {"global": {"workers": workers}, "listeners": listeners, "backends": backends}
    try:
        pyvs = Pyvs(cfg, tmp_path_factory.mktemp(f"corpus-w{workers}"))
    finally:
        for sock in held:
            sock.close()
    try:
        yield Running(pyvs, ports, servers, configs)
    finally:
        pyvs.stop()
        loop_thread.run(stop())


def _exchange(case: Case, running: Running, loop_thread: LoopThread) -> str:
    port = running.ports[case.name]
    servers = running.servers[case.name]
    outcome = run_client(port, case.client, case.end)

    async def snapshot() -> str:
        # The servers' records live on the loop: render them there.
        names = {port: "listener", outcome.client_port: "client"}
        for path, srv in servers.items():
            names[srv.port] = path
        return render(case, running.configs[case.name], servers, outcome, names)

    text: str = loop_thread.run(snapshot())
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_exchange(case: Case, corpus_pyvs: Running, loop_thread: LoopThread) -> None:
    actual = _exchange(case, corpus_pyvs, loop_thread)
    golden = CORPUS / f"{case.name}.txt"
    if RECORD:
        CORPUS.mkdir(exist_ok=True)
        if not golden.exists() or golden.read_text() != actual:
            golden.write_text(actual)
        return
    assert golden.exists(), f"no golden file {golden}: record it with PYVS_CORPUS_RECORD=1"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"corpus/{case.name}.txt (golden)", tofile="actual",
        ))
        pytest.fail(f"exchange differs from the golden file (- golden, + actual):\n{diff}", pytrace=False)


def test_every_golden_has_a_case() -> None:
    names = {c.name for c in CASES}
    assert len(names) == len(CASES), "case names must be unique"
    orphans = sorted(p.name for p in CORPUS.glob("*.txt") if p.stem not in names)
    assert not orphans, f"golden files without a case (remove them): {orphans}"

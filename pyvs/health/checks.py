"""Active health checks: tcp, http, agent, command and grpc. One coroutine per kind
(HTTP/2 ones, ``http`` to a ``proto: h2`` server and ``grpc``, in h2check.py).

Each check returns a :class:`CheckResult`; none raises for a failing server (a
refused connection, a timeout, a bad status are results, not errors). The timeout
covers the whole check, connect included. ``detail`` is short text for logs and the
admin status: what was wrong, or what the server said.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from pyvs.balance.capacity import AgentReport, parse_agent_reply
from pyvs.config.health_schema import HealthCheck
from pyvs.tls.client import BY_SERVER

_MAX_READ = 65536


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str
    duration: float
    agent: AgentReport | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to check: the server's host and the port to probe."""

    backend: str
    server: str
    host: str
    port: int
    proto: str = "http1"  # servers[].proto: an http check speaks HTTP/2 to h2 and h2c servers
    tls: Any = None  # servers[].tls (ServerTls), for HTTP/2 checks (HTTP/1.1 ones use BY_SERVER)


def _unescape(text: str) -> bytes:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


async def _read_all(reader: asyncio.StreamReader, limit: int = _MAX_READ) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = await reader.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def tcp_check(cfg: HealthCheck, t: Target) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(t.host, t.port)
    try:
        if cfg.send:
            writer.write(_unescape(cfg.send))
            await writer.drain()
        if cfg.expect:
            want = _unescape(cfg.expect)
            got = b""
            while want not in got:
                chunk = await reader.read(4096)
                if not chunk:
                    return False, f"connection closed before {cfg.expect!r} arrived"
                got = (got + chunk)[-_MAX_READ:]
            return True, f"got {cfg.expect!r}"
        return True, "connected"
    finally:
        writer.close()


def _status_ok(cfg: HealthCheck, status: int) -> bool:
    return any(lo <= status <= hi for lo, hi in cfg.status_ranges())


async def http_check(cfg: HealthCheck, t: Target) -> tuple[bool, str]:
    ctx: ssl.SSLContext | None = None
    sni: str | None = None
    own = BY_SERVER.get((t.backend, t.server))  # servers[].tls: the proxy's own context
    if own is not None:
        ctx, sni = own.context, own.sni
    elif cfg.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(t.host, t.port, ssl=ctx, server_hostname=sni)
    try:
        host = cfg.host or (f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}")
        own_host = any(k.lower() == "host" for k in cfg.headers)
        lines = [f"{cfg.method} {cfg.path} HTTP/1.1", *([] if own_host else [f"Host: {host}"]),
                 "User-Agent: pyvs-health-check", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in cfg.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return False, "response head too large"
        except asyncio.IncompleteReadError as exc:
            return False, f"connection closed after {len(exc.partial)} bytes of response head"
        status_line = head.split(b"\r\n", 1)[0]
        m = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
        if not m:
            return False, f"not an HTTP response: {status_line[:60]!r}"
        status = int(m.group(1))
        if not _status_ok(cfg, status):
            return False, f"status {status}, expected {', '.join(map(str, cfg.expect_status))}"
        if cfg.expect_body is None:
            return True, f"status {status}"
        body = await _read_body(reader, head.lower())
    finally:
        writer.close()
    text = body.decode("utf-8", errors="replace")
    if not re.search(cfg.expect_body, text):
        return False, f"status {status}, body does not match {cfg.expect_body!r}"
    return True, f"status {status}"


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body by its framing (the server need not close the connection), at most 64 KiB."""
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head)
    if m:
        try:
            return await reader.readexactly(min(int(m.group(1)), _MAX_READ))
        except asyncio.IncompleteReadError as exc:
            return exc.partial
    if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
        raw = b""
        while not raw.endswith(b"0\r\n\r\n") and len(raw) < _MAX_READ:
            chunk = await reader.read(4096)
            if not chunk:
                break
            raw += chunk
        return _dechunk(raw)
    return await _read_all(reader)


def _dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


async def agent_check(cfg: HealthCheck, t: Target) -> tuple[bool, str, AgentReport | None]:
    """HAProxy-style agent: connect, read one line such as ``75%``, ``drain``, ``up 50%``."""
    reader, writer = await asyncio.open_connection(t.host, t.port)
    try:
        line = await reader.readline()
    finally:
        writer.close()
    text = line.decode("ascii", errors="replace").strip()
    if not text:
        return False, "agent sent nothing", None
    try:
        report = parse_agent_reply(text)
    except ValueError as exc:
        return False, f"bad agent reply {text!r}: {exc}", None
    return report.state != "down", f"agent: {text}", report


async def command_check(cfg: HealthCheck, t: Target, server_address: str) -> tuple[bool, str]:
    env = {
        **os.environ,
        "PYVS_BACKEND": t.backend,
        "PYVS_SERVER_NAME": t.server,
        "PYVS_SERVER_ADDRESS": t.host,
        "PYVS_SERVER_PORT": str(t.port),
        "PYVS_SERVER": server_address,
    }
    proc = await asyncio.create_subprocess_exec(
        *cfg.command, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    text = out.decode("utf-8", errors="replace").strip().splitlines()
    last = text[-1][:200] if text else ""
    return proc.returncode == 0, f"exit {proc.returncode}" + (f": {last}" if last else "")


async def run_check(cfg: HealthCheck, t: Target, server_address: str) -> CheckResult:
    """Run one check of ``cfg.type`` with ``cfg.timeout``; never raises for a bad server."""
    start = time.monotonic()
    agent: AgentReport | None = None
    try:
        async with asyncio.timeout(cfg.timeout):
            if cfg.type == "tcp":
                ok, detail = await tcp_check(cfg, t)
            elif cfg.type == "http" and t.proto == "http1":
                ok, detail = await http_check(cfg, t)
            elif cfg.type in ("http", "grpc"):
                from pyvs.health.h2check import grpc_check, http2_check

                ok, detail = await (http2_check(cfg, t) if cfg.type == "http" else grpc_check(cfg, t))
            elif cfg.type == "agent":
                ok, detail, agent = await agent_check(cfg, t)
            else:
                ok, detail = await command_check(cfg, t, server_address)
    except TimeoutError:
        ok, detail = False, f"timeout after {cfg.timeout:g}s"
    except OSError as exc:
        ok, detail = False, exc.strerror or str(exc) or type(exc).__name__
    except (asyncio.IncompleteReadError, ssl.SSLError, UnicodeError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(ok, detail, time.monotonic() - start, agent)

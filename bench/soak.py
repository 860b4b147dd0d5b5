"""Soak test: minutes of mixed traffic through a real pyvs while its servers die.

    make soak                      # 10 minutes
    make soak SOAK_MINUTES=1
    .venv/bin/python bench/soak.py --minutes 2 --clients 24

Not run by CI. What runs:

* pyvs (``pyvs run``, 2 workers) with one http listener and a backend of two servers;
* two aiohttp servers, each a subprocess of this script (``--serve PORT``), killed
  with SIGKILL in turn every ``--kill-every`` seconds (default 20) and restarted on the
  same port two seconds later, mid-response for whatever they were sending;
* client tasks with a small hand-written HTTP/1.x client (so that what the wire says
  is not hidden by a library): GET keep-alive and ``Connection: close``, HTTP/1.0 GET
  (the body delimited by the close), POST with Content-Length and with chunked bodies
  (echoed back), bodies both Content-Length and chunked from the server, and WebSocket
  echo sessions (aiohttp client).

Every response body carries ``X-Sha256`` and ``X-Length`` from the server. A response
is classified as

* ``ok``: complete by its framing and the checksum matches;
* ``error``: an error status (502/503/504), a reset, or a body that is visibly cut
  (short Content-Length, no last chunk): the client can tell, which is acceptable;
* ``truncated``: **looks complete** (framing satisfied, or a clean FIN on a body
  delimited by the close) but is shorter than ``X-Length``;
* ``mismatch``: looks complete, has the right length, wrong checksum.

``truncated`` and ``mismatch`` must both be 0. The RSS and open fds of the pyvs
processes (supervisor and workers) are taken after a warm-up and again at the end
with the traffic stopped; the run fails if a process grows by more than
``--rss-margin-mb`` (default 32 MiB) or ``--fd-margin`` (default 16) fds, or if a
worker was replaced. Exit status 0 only when everything holds.

``--reload-every N`` reloads pyvs (SIGHUP, same config file) every N seconds and checks
that each reload is applied (the worker generation in ``/status`` moves on). Reloads
replace the workers, so with reloads the fd/RSS comparison is made per worker slot
(the new worker against the one measured at the start) instead of failing on the new
pid; a reload that is refused or not applied in 30 s fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the servers


def body_for(seed: str, size: int) -> bytes:
    """Deterministic bytes for (seed, size): the client does not need them, the
    server's checksum header says what they must be."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def serve(port: int, name: str) -> None:
    """A backend: /data (GET, Content-Length or chunked), /echo (POST), /ws, /healthz."""
    from aiohttp import WSMsgType, web

    async def data(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "1000"))
        body = body_for(request.query.get("seed", "x"), size)
        headers = {"X-Sha256": hashlib.sha256(body).hexdigest(), "X-Length": str(size), "X-Server": name}
        if request.query.get("mode") == "chunked":
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            step = max(1, size // 8)
            for i in range(0, size, step):
                await resp.write(body[i : i + step])
                await asyncio.sleep(0.005)  # spread over time: a kill lands mid-body
            await resp.write_eof()
            return resp
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        return web.Response(body=body, headers={"X-Sha256": digest, "X-Length": str(len(body)), "X-Server": name})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 26)
    app.router.add_get("/data", data)
    app.router.add_post("/echo", echo)
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, reuse_address=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One backend subprocess, killed and restarted on the same port."""

    def __init__(self, name: str, port: int, log: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(self.port), "--name", self.name],
                stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server {self.name} did not start on {self.port}")

    def kill(self, *, count: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += count
        self.proc = None


# ---------------------------------------------------------------- pyvs


@dataclass
class ProcStats:
    rss_kib: int
    fds: int


def proc_stats(pid: int) -> ProcStats:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return ProcStats(rss, len(os.listdir(f"/proc/{pid}/fd")))


class Pyvs:
    def __init__(self, tmp: Path, servers: list[Server], workers: int) -> None:
        self.port = free_port()
        self.admin = free_port()
        cfg = {
            "global": {"workers": workers, "stats_interval": "1s"},
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "listeners": [{"name": "soak", "mode": "http", "bind": [f"127.0.0.1:{self.port}"], "backend": "app"}],
            "backends": [{
                "name": "app",
                "balance": "roundrobin",
                "health": {"type": "http", "path": "/healthz", "interval": "1s"},
                "servers": [{"name": s.name, "address": f"127.0.0.1:{s.port}"} for s in servers],
            }],
        }
        self.config = tmp / "soak.yaml"
        self.config.write_text(json.dumps(cfg))  # JSON is YAML
        self.log = tmp / "pyvs.log"
        with self.log.open("wb") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "pyvs.cli", "run", "-c", str(self.config)],
                                         stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pyvs exited with {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError, ValueError):
                st = self.status()
                if st["workers"] and all(w.get("ready") for w in st["workers"]):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pyvs not ready:\n{self.log.read_text()}")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def pids(self) -> dict[str, int]:
        st = self.status()
        out = {"supervisor": self.proc.pid}
        for w in st["workers"]:
            out[f"worker {w.get('index', len(out) - 1)}"] = int(w["pid"])
        return out

    def reload(self, timeout: float = 30.0) -> str | None:
        """SIGHUP, then wait until the new worker generation runs; None when it did,
        else what went wrong."""
        before = self.status()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):
                st = self.status()
                last = st.get("last_reload")
                if st["generation"] > before["generation"] and all(w.get("ready") for w in st["workers"]):
                    return None
                if last is not None and last != before.get("last_reload") and not last.get("ok"):
                    return f"reload refused: {last.get('errors')}"
        return f"reload not applied in {timeout:.0f}s"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ---------------------------------------------------------------- clients


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    reloads: int = 0
    reload_failures: list[str] = field(default_factory=list)

    def note(self, outcome: str, kind: str, detail: str = "") -> None:
        self.counts[outcome] += 1
        self.kinds[f"{kind}:{outcome}"] += 1
        if outcome in ("truncated", "mismatch", "bad-response") and detail:
            ex = self.examples.setdefault(outcome, [])
            if len(ex) < 5:
                ex.append(f"{kind}: {detail}")


class Cut(Exception):
    """The response was visibly cut (the client can tell)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    looks_complete: bool
    keep_alive: bool


async def read_response(r: asyncio.StreamReader, *, http10: bool, head: bool = False) -> Response:
    try:
        raw = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Cut("no head") from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    conn = headers.get("connection", "").lower()
    keep_alive = ("close" not in conn) if version == "HTTP/1.1" and not http10 else ("keep-alive" in conn)
    te = headers.get("transfer-encoding", "").lower()
    code = int(status)
    if head or code in (204, 304) or code < 200:
        return Response(code, headers, b"", True, keep_alive)
    if te:
        if te != "chunked":
            raise AssertionError(f"unexpected Transfer-Encoding {te!r}")
        chunks = bytearray()
        try:
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await r.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunks += await r.readexactly(size)
                await r.readexactly(2)
        except asyncio.IncompleteReadError as exc:
            raise Cut("chunked body cut") from exc
        return Response(code, headers, bytes(chunks), True, keep_alive)
    if "content-length" in headers:
        n = int(headers["content-length"])
        try:
            fixed = await r.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise Cut("short content-length body") from exc
        return Response(code, headers, fixed, True, keep_alive)
    # Delimited by the close: a clean EOF is all the client has to go on. A reset
    # raises ConnectionResetError out of read(): visibly cut.
    body = await r.read()
    return Response(code, headers, body, True, False)


def judge(tally: Tally, kind: str, resp: Response, sent: bytes | None = None) -> None:
    if resp.status >= 500:
        tally.note("error", kind)
        return
    if resp.status != 200:
        tally.note("bad-response", kind, f"status {resp.status}")
        return
    want_len = int(resp.headers.get("x-length", "-1"))
    want_sum = resp.headers.get("x-sha256", "")
    if len(resp.body) != want_len:
        tally.note("truncated", kind, f"{len(resp.body)} of {want_len} bytes, headers {resp.headers}")
    elif hashlib.sha256(resp.body).hexdigest() != want_sum:
        tally.note("mismatch", kind, f"{want_len} bytes, headers {resp.headers}")
    elif sent is not None and resp.body != sent:
        tally.note("mismatch", kind, "echo differs from what was sent")
    else:
        tally.note("ok", kind)


def chunk_encode(body: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        n = rng.randint(1, 20000)
        out += b"%x\r\n" % len(body[i : i + n]) + body[i : i + n] + b"\r\n"
        i += n
    return bytes(out + b"0\r\n\r\n")


async def http_client(port: int, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        kind = rng.choice(["get-keepalive", "get-close", "get-http10", "post-length", "post-chunked"])
        mode = rng.choice(["length", "chunked"])
        kind_m = f"{kind}/{mode}"
        size = rng.choice([0, 1, 100, 4096, 65536, 300_000])
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            tally.note("error", kind_m)
            await asyncio.sleep(0.05)
            continue
        try:
            rounds = rng.randint(1, 8) if kind in ("get-keepalive", "post-length", "post-chunked") else 1
            for _ in range(rounds):
                if stop.is_set():
                    break
                sent: bytes | None = None
                q = f"size={size}&mode={mode}&seed={rng.getrandbits(32)}"
                if kind == "get-http10":
                    req = f"GET /data?{q} HTTP/1.0\r\nHost: soak\r\n\r\n".encode()
                elif kind == "get-close":
                    req = f"GET /data?{q} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode()
                elif kind == "get-keepalive":
                    req = f"GET /data?{q} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()
                else:
                    sent = body_for(str(rng.getrandbits(32)), size)
                    if kind == "post-length":
                        req = f"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n\r\n".encode() + sent
                    else:
                        req = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + chunk_encode(sent, rng))
                w.write(req)
                await w.drain()
                resp = await asyncio.wait_for(read_response(r, http10=kind == "get-http10"), 60)
                judge(tally, kind_m, resp, sent)
                if not resp.keep_alive:
                    break
        except (Cut, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            tally.note("error", kind_m)
        except (ValueError, IndexError, AssertionError) as exc:
            tally.note("bad-response", kind_m, repr(exc))
        finally:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def ws_client(port: int, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    import aiohttp

    rng = random.Random(seed)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws", receive_timeout=30) as sock:
                    for _ in range(rng.randint(1, 20)):
                        msg = body_for(str(rng.getrandbits(32)), rng.choice([1, 100, 5000, 70000]))
                        await sock.send_bytes(msg)
                        got = await asyncio.wait_for(sock.receive(), 30)
                        if got.type != aiohttp.WSMsgType.BINARY:
                            tally.note("error", "websocket")  # the server went away: the client is told
                            break
                        if got.data != msg:
                            tally.note("mismatch", "websocket", f"{len(got.data)} of {len(msg)} bytes")
                        else:
                            tally.note("ok", "websocket")
                        await asyncio.sleep(rng.random() * 0.05)
            except (aiohttp.ClientError, OSError, TimeoutError):
                tally.note("error", "websocket")
                await asyncio.sleep(0.1)


async def killer(servers: list[Server], every: float, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        s = servers[i % len(servers)]
        i += 1
        s.kill()
        await asyncio.sleep(2)
        await asyncio.to_thread(s.start)


# ---------------------------------------------------------------- main


async def reloader(pyvs: Pyvs, every: float, stop: asyncio.Event, tally: Tally) -> None:
    """Reload pyvs every ``every`` seconds (SIGHUP); a reload that fails is recorded."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        why = await asyncio.to_thread(pyvs.reload)
        tally.reloads += 1
        if why is not None:
            tally.reload_failures.append(why)
            print(f"  {time.strftime('%H:%M:%S')} {why}", flush=True)


def measure(pyvs: Pyvs) -> dict[str, tuple[int, ProcStats]]:
    return {name: (pid, proc_stats(pid)) for name, pid in pyvs.pids().items()}


async def traffic(pyvs: Pyvs, servers: list[Server], args: argparse.Namespace, tally: Tally
                  ) -> dict[str, tuple[int, ProcStats]]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(http_client(pyvs.port, tally, stop, 1000 + i)) for i in range(args.clients)]
    tasks += [asyncio.create_task(ws_client(pyvs.port, tally, stop, 2000 + i)) for i in range(args.ws_clients)]
    warmup = min(10.0, args.minutes * 60 / 6)
    await asyncio.sleep(warmup)
    start = await asyncio.to_thread(measure, pyvs)
    print(f"after {warmup:.0f}s of warm-up: {fmt(start)}", flush=True)
    tasks.append(asyncio.create_task(killer(servers, args.kill_every, stop)))
    if args.reload_every:
        tasks.append(asyncio.create_task(reloader(pyvs, args.reload_every, stop, tally)))
    end_at = time.monotonic() + args.minutes * 60 - warmup
    while time.monotonic() < end_at:
        await asyncio.sleep(min(30.0, max(0.0, end_at - time.monotonic())))
        c = tally.counts
        print(f"  {time.strftime('%H:%M:%S')} requests {sum(c.values())}: ok {c['ok']} error {c['error']} "
              f"truncated {c['truncated']} mismatch {c['mismatch']} bad {c['bad-response']}", flush=True)
    stop.set()
    await asyncio.wait(tasks, timeout=90)
    for t in tasks:
        t.cancel()
    return start


def fmt(stats: dict[str, tuple[int, ProcStats]]) -> str:
    return ", ".join(f"{n} (pid {pid}) {s.rss_kib / 1024:.1f} MiB {s.fds} fds" for n, (pid, s) in stats.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 10))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=12, help="concurrent HTTP client tasks")
    ap.add_argument("--ws-clients", type=int, default=2, help="concurrent WebSocket sessions")
    ap.add_argument("--kill-every", type=float, default=20.0, help="seconds between server kills")
    ap.add_argument("--reload-every", type=float, default=60.0,
                    help="seconds between reloads (SIGHUP); 0: no reload")
    ap.add_argument("--rss-margin-mb", type=float, default=32.0, help="allowed RSS growth per pyvs process")
    ap.add_argument("--fd-margin", type=int, default=16, help="allowed open-fd growth per pyvs process")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--name", default="s", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.name)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="pyvs-soak-"))
    servers = [Server(f"s{i}", free_port(), tmp / f"server{i}.log") for i in range(2)]
    tally = Tally()
    failures: list[str] = []
    pyvs: Pyvs | None = None
    try:
        for s in servers:
            s.start()
        pyvs = Pyvs(tmp, servers, args.workers)
        print(f"soak: {args.minutes:g} min, pyvs on 127.0.0.1:{pyvs.port} ({args.workers} workers), "
              f"{args.clients} HTTP + {args.ws_clients} WebSocket clients, a server killed every "
              f"{args.kill_every:g}s, reload: {f'every {args.reload_every:g}s' if args.reload_every else 'none'}; "
              f"logs in {tmp}", flush=True)
        t0 = time.monotonic()
        start = asyncio.run(traffic(pyvs, servers, args, tally))
        elapsed = time.monotonic() - t0
        time.sleep(2)  # idle: keep-alive connections from the clients are gone
        end = measure(pyvs)
        print(f"at the end (traffic stopped): {fmt(end)}")
        for name, (pid, s0) in start.items():
            if name not in end or (end[name][0] != pid and not tally.reloads):
                failures.append(f"{name} (pid {pid}) was replaced during the run")
                continue
            s1 = end[name][1]
            if (s1.rss_kib - s0.rss_kib) / 1024 > args.rss_margin_mb:
                failures.append(f"{name}: RSS grew {s0.rss_kib / 1024:.1f} -> {s1.rss_kib / 1024:.1f} MiB "
                                f"(margin {args.rss_margin_mb:g} MiB)")
            if s1.fds - s0.fds > args.fd_margin:
                failures.append(f"{name}: open fds grew {s0.fds} -> {s1.fds} (margin {args.fd_margin})")
    finally:
        code = pyvs.stop() if pyvs is not None else None
        for s in servers:
            s.kill(count=False)
    c = tally.counts
    total = sum(c.values())
    print(f"\nrequests {total} in {elapsed:.0f}s ({total / max(elapsed, 1):.0f}/s): ok {c['ok']}, errors "
          f"{c['error']} (visible to the client), truncated-as-complete {c['truncated']}, checksum mismatches "
          f"{c['mismatch']}, bad responses {c['bad-response']}; server kills {sum(s.kills for s in servers)}; "
          f"pyvs exit status {code}")
    for k, v in sorted(tally.kinds.items()):
        print(f"  {k:32} {v}")
    for outcome, ex in tally.examples.items():
        print(f"examples of {outcome}:")
        for e in ex:
            print(f"  {e[:300]}")
    if c["truncated"]:
        failures.append(f"{c['truncated']} truncated responses looked complete")
    if c["mismatch"]:
        failures.append(f"{c['mismatch']} checksum mismatches")
    if c["bad-response"]:
        failures.append(f"{c['bad-response']} unexpected responses")
    if not c["ok"]:
        failures.append("no request succeeded")
    if args.reload_every:
        print(f"reloads {tally.reloads}, failed {len(tally.reload_failures)}")
        failures += tally.reload_failures
    for f in failures:
        print(f"FAIL: {f}")
    print("PASS" if not failures else "soak FAILED", f"(logs in {tmp})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

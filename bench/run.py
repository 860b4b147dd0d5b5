#!/usr/bin/env python3
"""Benchmark pyvs against HAProxy and nginx on this machine, in one run.

Run it with ``make bench`` (or ``.venv/bin/python bench/run.py --help``). For every proxy in turn
the script starts the proxy with one worker in front of a shared backend, warms it up, measures it
with a load tool, samples the CPU time of the proxy's whole process tree before and after the
measured load, and stops it again. The figure that matters is *work per CPU-second of the proxy*
(requests per CPU-second for HTTP), reported as a ratio to HAProxy measured in the same run; see
docs/benchmarks.md for why.

Structure: a :class:`Scenario` is (backend setup, per-proxy config generator, load tool, probe).
``http-small``, ``http-browser`` (the same with a browser's request head),
``http-post`` (small JSON POSTs) and ``http-routes`` (the same GETs through a 51-route
table, matching the last route) are defined here, the tcp scenarios in
bench/tcp_scenarios.py; a new scenario adds a backend starter, config generators and a
load tool and registers itself in ``SCENARIOS``; the runner, CPU accounting, median/ratio
logic, table and JSON output stay as they are.

Only the standard library is required; ``rich`` is used for the table when it is importable.
All traffic goes to 127.0.0.1. Every process the script starts is stopped and every temporary
directory removed, also on Ctrl-C, SIGTERM and exceptions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
LOCALHOST = "127.0.0.1"

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
WRK = "wrk"
CURL = "curl"
PYVS = str(REPO / ".venv" / "bin" / "pyvs")

PROXY_ORDER = ("haproxy", "nginx", "pyvs")
REFERENCE = "haproxy"
CLK_TCK = os.sysconf("SC_CLK_TCK")

READY_TIMEOUT = 20.0  # seconds a proxy (pyvs: supervisor + forked worker) may take to come up
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


class BenchError(Exception):
    """A step of the benchmark failed; the message is shown to the user."""


# --------------------------------------------------------------------------------------------------
# small helpers


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_endpoint() -> Endpoint:
    return Endpoint(LOCALHOST, free_ports(1)[0])


def parse_duration(text: str) -> int:
    """``10``, ``10s``, ``2m`` -> whole seconds (wrk takes whole seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 10, 10s, 2m)")
    value = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]
    if value < 1:
        raise argparse.ArgumentTypeError("duration must be at least 1s")
    return round(value)


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# CPU accounting over a process tree


def _read_stat(pid: int) -> tuple[int, int] | None:
    """Return (ppid, utime+stime+cutime+cstime in ticks) for ``pid`` or None if it is gone.

    cutime/cstime (fields 16, 17) hold the CPU time of children the process has already reaped;
    counting them means a worker that exits during the run is not lost. Live children are counted
    separately through the tree walk, so nothing is counted twice.
    """
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may contain spaces: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return ppid, ticks


def process_tree(root: int) -> dict[int, int]:
    """Map pid -> CPU ticks for ``root`` and all its live descendants (walks /proc/*/stat ppid)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _read_stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    if root not in stats:
        return {}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in tree:
            continue
        tree[pid] = stats[pid][1]
        todo.extend(children.get(pid, ()))
    return tree


@dataclass
class CpuSample:
    ticks: dict[int, int]

    @classmethod
    def take(cls, root: int) -> CpuSample:
        return cls(process_tree(root))

    def seconds_until(self, later: CpuSample) -> float:
        """CPU seconds used by the tree between the two samples.

        A process that is in ``later`` but not in ``self`` started during the run and counts from
        zero; one that vanished is (if it was reaped inside the tree) in its parent's cutime/cstime.
        """
        total = 0
        for pid, ticks in later.ticks.items():
            total += ticks - self.ticks.get(pid, 0)
        return total / CLK_TCK


# --------------------------------------------------------------------------------------------------
# processes and temporary files


class Workspace:
    """Owns one temporary directory and every process started in it; ``close`` undoes everything."""

    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pyvs-bench-"))
        self.keep = keep
        self._procs: list[subprocess.Popen[bytes]] = []

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write(self, name: str, text: str) -> Path:
        p = self.path(name)
        p.write_text(text)
        return p

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (so Ctrl-C on the terminal reaches only us and we stop it
        in order); stdout and stderr go to ``<name>.log`` in the workspace."""
        logf = self.path(f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                cwd=cwd or self.dir, start_new_session=True,
            )
        finally:
            logf.close()
        self._procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        p = self.dir / f"{name}.log"
        try:
            text = p.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group we created (and any descendant that left it), then SIGKILL."""
        if proc not in self._procs:
            return
        self._procs.remove(proc)
        tree = set(process_tree(proc.pid)) if proc.poll() is None else set()
        _signal_group(proc.pid, signal.SIGTERM)
        for pid in tree - {proc.pid}:
            _signal_pid(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # The group leader may be gone while its children linger; sweep both with SIGKILL.
        _signal_group(proc.pid, signal.SIGKILL)
        for pid in tree:
            _signal_pid(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        if self.keep:
            log(f"kept temporary files in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# --------------------------------------------------------------------------------------------------
# readiness


def wait_port(proc: subprocess.Popen[bytes], ep: Endpoint, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"exited with status {proc.returncode} before listening on {ep}")
        try:
            with socket.create_connection((ep.host, ep.port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"not listening on {ep} after {timeout:.0f}s")
        time.sleep(0.05)


def curl(url: str, timeout: float = 5.0, headers: Sequence[str] = ()) -> tuple[int, bytes]:
    """GET ``url`` with curl (``headers``: extra ``Name: value`` lines); return (status, body).
    Status 0 means no HTTP answer."""
    extra = [a for h in headers for a in ("-H", h)]
    try:
        out = subprocess.run(
            [CURL, "-s", "--noproxy", "*", "--max-time", str(timeout), "-o", "-",
             "-w", "\n%{http_code}", *extra, url],
            capture_output=True, timeout=timeout + 5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0, b""
    body, _, code = out.stdout.rpartition(b"\n")
    try:
        return int(code), body
    except ValueError:
        return 0, b""


# --------------------------------------------------------------------------------------------------
# scenario plumbing


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    threads: int
    warmup: int
    repeat: int
    proxies: tuple[str, ...]
    keep: bool


@dataclass
class ProxyLaunch:
    """How to start one proxy: a command line; its config files are already written."""

    argv: list[str]
    listen: Endpoint
    cwd: Path | None = None
    notes: str = ""


@dataclass
class LoadResult:
    """Output of one load-tool run. ``work`` is what is divided by the proxy's CPU seconds (requests
    for HTTP; a bulk-throughput scenario would put bytes here and set ``work_unit``)."""

    work: float
    work_unit: str
    seconds: float
    rate: float  # work per wall-clock second
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    raw: str = ""


@dataclass
class Backend:
    endpoint: Endpoint
    proc: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)
    # A second address of the same server for one proxy alone: a kernel data plane
    # DNATs on loopback, and its reply tuples (backend -> client port) must not clash
    # with conntrack entries the other proxies' backend connections left behind.
    private: Endpoint | None = None


BackendStarter = Callable[[Workspace], Backend]
ConfigGen = Callable[[Workspace, Endpoint, Backend], ProxyLaunch]
LoadTool = Callable[[Endpoint, Options, int], LoadResult]  # (target, options, seconds)
Probe = Callable[[Endpoint, Backend], list[str]]  # raises BenchError if unusable, returns warnings


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    start_backend: BackendStarter
    proxies: dict[str, ConfigGen]
    load: LoadTool
    probe: Probe
    rate_label: str = "req/s"
    per_cpu_label: str = "req/CPU-s"
    rate_format: str = ",.0f"
    per_cpu_format: str = ",.0f"
    # "per_cpu": the ratio column compares work per proxy CPU-second; "rate": wall-clock
    # throughput (for kernel data planes, whose CPU is not charged to the proxy).
    ratio_by: str = "per_cpu"
    title: str = ""  # the load in the table title; default: the wrk command line
    # Rows run only when --only names them (e.g. "direct", which would leave conntrack
    # entries that disturb a kernel data plane measured after it in the same run).
    opt_in: tuple[str, ...] = ()
    # Lines printed under the table and stored in the JSON file (e.g. a target and its verdict).
    report: Callable[[Sequence[Summary]], list[str]] | None = None


# --------------------------------------------------------------------------------------------------
# nginx helpers (backend and proxy)


def _nginx_proxy_head(prefix: Path) -> str:
    """The start of every HTTP scenario's proxying nginx.conf, up to the ``http`` block's
    server-wide settings (one worker, client keep-alive that never ends a benchmark)."""
    return f"""\
daemon off;
{_nginx_user_line()}
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {_nginx_temp_paths(prefix)}
    keepalive_requests 10000000;
    keepalive_timeout 120s;"""


def _nginx_backend_head(prefix: Path) -> str:
    """The start of every backend nginx.conf (one process, no master), up to the
    ``http`` block's temp paths; the caller goes on with its own settings."""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {_nginx_temp_paths(prefix)}"""


def _nginx_temp_paths(prefix: Path) -> str:
    """temp-path directives inside the workspace, only for modules this nginx build has."""
    try:
        built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        built = ""
    lines = [f"client_body_temp_path {prefix / 'client_body'};"]
    for mod in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{mod}_module" not in built:
            lines.append(f"{mod}_temp_path {prefix / mod};")
    return "\n    ".join(lines)


def _nginx_user_line() -> str:
    """With a master process nginx switches its worker to ``user`` when root; keep our own user."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(0).pw_name};"


def _nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return [NGINX, "-p", f"{prefix}/", "-e", str(prefix / "error.log"), "-c", str(conf)]


# --------------------------------------------------------------------------------------------------
# scenario: http-small


# 100 bytes, no characters that need escaping inside an nginx "..." string.
HTTP_BODY = "pyvs benchmark backend: a small plain-text response body".ljust(99, ".") + "\n"


def http_backend(ws: Workspace, items: bool = False) -> Backend:
    """The nginx every HTTP scenario proxies to; ``items``: it also answers ``/items/...``
    (http-routes) with the same body."""
    ep = free_endpoint()
    private = free_endpoint()
    prefix = ws.path("backend-nginx", "x").parent
    items_location = (f'\n        location {ROUTES_PREFIX} {{ return 200 "{HTTP_BODY.rstrip()}\\n"; }}'
                      if items else "")
    conf = ws.write("backend-nginx/nginx.conf", f"""\
{_nginx_backend_head(prefix)}
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen {ep} backlog=4096;
        listen {private} backlog=4096;
        default_type text/plain;
        location = / {{ return 200 "{HTTP_BODY.rstrip()}\\n"; }}
        location = /xff {{ return 200 "xff=$http_x_forwarded_for\\n"; }}{items_location}
    }}
}}
""")
    proc = ws.start("backend-nginx", _nginx_argv(prefix, conf))
    try:
        wait_port(proc, ep, 10)
    except BenchError as e:
        raise BenchError(f"backend nginx: {e}\n{ws.log_tail('backend-nginx')}") from None
    for path in ("/", ROUTES_PATH) if items else ("/",):
        status, body = curl(f"http://{ep}{path}")
        if status != 200 or body.decode(errors="replace") != HTTP_BODY:
            raise BenchError(f"backend nginx answered {status} {body[:80]!r} to GET {path}")
    return Backend(ep, proc, {"server": "nginx", "body_bytes": len(HTTP_BODY)}, private=private)


# global and defaults of every HTTP scenario's HAProxy: one thread, X-Forwarded-For, pooled
# server connections shared between clients.
HAPROXY_HTTP_DEFAULTS = """\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
"""


def http_haproxy(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    cfg = ws.write("haproxy/haproxy.cfg", f"""\
{HAPROXY_HTTP_DEFAULTS}
frontend fe
    bind {listen}
    default_backend be

backend be
    server s1 {backend.endpoint}
""")
    return ProxyLaunch([HAPROXY, "-f", str(cfg), "-db"], listen)


def http_nginx(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    prefix = ws.path("proxy-nginx", "x").parent
    conf = ws.write("proxy-nginx/nginx.conf", f"""\
{_nginx_proxy_head(prefix)}
    {_nginx_upstream("be", backend.endpoint)}
    server {{
        listen {listen} backlog=4096;
        location / {{
            {_nginx_proxy_pass("be")}
        }}
    }}
}}
""")
    return ProxyLaunch(_nginx_argv(prefix, conf), listen)


def _nginx_upstream(name: str, server: Endpoint) -> str:
    """An upstream block as every HTTP scenario's nginx has it: pooled keep-alive connections."""
    return f"""upstream {name} {{
        server {server};
        keepalive 64;
        keepalive_requests 10000000;
    }}"""


def _nginx_proxy_pass(upstream: str, indent: str = "            ") -> str:
    """The body of a proxying location: HTTP/1.1 to the upstream's pool, X-Forwarded-For."""
    return f"\n{indent}".join((
        f"proxy_pass http://{upstream};",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ))


def pyvs_launch(ws: Workspace, listen: Endpoint, server: Endpoint, listener: str = "", *, backend: str = "",
                notes: str = "") -> ProxyLaunch:
    """A one-worker pyvs with one http listener and one backend of one server, for a
    scenario: ``listener`` and ``backend`` are YAML lines added to each (indented as
    keys of a list item: four spaces), e.g. ``"    http2: true\\n"``."""
    admin = free_endpoint()
    listener = listener or "    backend: be\n"
    cfg = ws.write("pyvs/pyvs.yaml", f"""\
global: {{workers: 1}}
admin: {{listen: "{admin}"}}
listeners:
  - name: web
    mode: http
    bind: ["{listen}"]
{listener}backends:
  - name: be
{backend}    servers: [{{name: s1, address: "{server}"}}]
""")
    return ProxyLaunch([PYVS, "run", "-c", str(cfg)], listen, cwd=REPO, notes=notes)


def http_pyvs(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    return pyvs_launch(ws, listen, backend.endpoint)


def http_probe(target: Endpoint, backend: Backend) -> list[str]:
    status, body = curl(f"http://{target}/")
    if status != 200:
        raise BenchError(f"GET / through the proxy returned {status or 'no answer'}")
    warnings = []
    if body.decode(errors="replace") != HTTP_BODY:
        warnings.append(f"body differs from the backend's: {body[:60]!r}")
    status, body = curl(f"http://{target}/xff")
    if status != 200 or b"127.0.0.1" not in body:
        warnings.append(f"X-Forwarded-For not seen by the backend ({status} {body.strip()[:60]!r})")
    return warnings


_WRK_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _wrk_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _WRK_UNITS_S[m.group(2)] * 1e3


def parse_wrk(out: str) -> LoadResult:
    """Parse ``wrk --latency`` output: requests, seconds, req/s, p50, p99 and error counts."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m or not rps:
        raise BenchError(f"cannot parse wrk output:\n{out.strip()}")
    pct = {p: _wrk_latency_ms(v) for p, v in re.findall(r"^\s*(\d+)%\s+(\S+)\s*$", out, re.M)}
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return LoadResult(
        work=float(m.group(1)),
        work_unit="requests",
        seconds=float(m.group(2)) * _WRK_UNITS_S[m.group(3)],
        rate=float(rps.group(1)),
        p50_ms=pct.get("50"),
        p99_ms=pct.get("99"),
        errors=errors,
        raw=out,
    )


# What Chromium sends for a page (version numbers fixed): 12 fields, ~600 bytes.
BROWSER_HEADERS = (
    "Connection: keep-alive",
    'sec-ch-ua: "Chromium";v="156", "Not-A.Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    "Upgrade-Insecure-Requests: 1",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 "
    "Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Sec-Fetch-Site: none",
    "Sec-Fetch-Mode: navigate",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    "Cookie: session=abcdef0123456789; theme=dark",
)


def wrk_load(target: Endpoint, opts: Options, seconds: int, headers: Sequence[str] = (),
             script: Path | None = None, path: str = "/") -> LoadResult:
    argv = [WRK, f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s", "--timeout", "5s",
            "--latency"]
    for h in headers:
        argv += ["-H", h]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"http://{target}{path}")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish in time") from None
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------------------------------------
# scenario: http-routes
#
# The http-small GETs through a route table whose last route is the one that matches: 50
# decoys (Host h{i}.example.com and path prefix /p{i}/, to backend "decoy"), then Host
# bench.example with the path regex ^/items/[0-9]+$ (to backend "real"), and no default.
# Both backends have the one nginx as their server. The same invocation also runs pyvs
# without routes (row "pyvs-small": http-small's config, the same requests), so the cost
# of the table shows as pyvs / pyvs-small, checked against ROUTES_TARGET.

ROUTES_DECOYS = 50
ROUTES_HOST = "bench.example"
ROUTES_PATH = "/items/12345"  # what wrk requests
ROUTES_REGEX = "^/items/[0-9]+$"
# The backend answers paths under it; with --routes-no-regex it is pyvs's last route instead
# of the regex (for a pyvs that does not know `path: "~regex"` yet).
ROUTES_PREFIX = "/items/"
ROUTES_BASELINE = "pyvs-small"
# pyvs with the route table must do at least this share of the requests per CPU-second it
# does without one (pyvs-small, same run): "within 10% of http-small".
ROUTES_TARGET = 0.90


@dataclass(frozen=True)
class RouteSpec:
    """One route of the http-routes table; each proxy's config is generated from these."""

    host: str
    backend: str
    path_prefix: str | None = None
    path_regex: str | None = None

    def matches(self, host: str, path: str) -> bool:
        """Whether ``Host: host`` and ``path`` match, as HAProxy's ``hdr(host) -i``, ``path_beg``
        and ``path_reg`` decide (nginx's server_name and locations agree on such requests)."""
        if host.lower() != self.host:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None


def route_table() -> list[RouteSpec]:
    decoys = [RouteSpec(f"h{i}.example.com", "decoy", path_prefix=f"/p{i}/") for i in range(ROUTES_DECOYS)]
    return [*decoys, RouteSpec(ROUTES_HOST, "real", path_regex=ROUTES_REGEX)]


def routes_pyvs_yaml(listen: Endpoint, admin: Endpoint, server: Endpoint, regex: bool = True) -> str:
    """pyvs: one listener whose ``routes`` are the table; ``regex=False`` gives the last route
    ``path_prefix: /items/`` instead of ``path: "~^/items/[0-9]+$"``."""
    lines = []
    for r in route_table():
        if r.path_prefix is not None:
            cond = f'path_prefix: "{r.path_prefix}"'
        elif regex:
            cond = f'path: "~{r.path_regex}"'
        else:
            cond = f'path_prefix: "{ROUTES_PREFIX}"'
        lines.append(f'      - {{match: {{host: "{r.host}", {cond}}}, backend: {r.backend}}}')
    routes = "\n".join(lines)
    return f"""\
global: {{workers: 1}}
admin: {{listen: "{admin}"}}
listeners:
  - name: web
    mode: http
    bind: ["{listen}"]
    routes:
{routes}
backends:
  - name: decoy
    servers: [{{name: s1, address: "{server}"}}]
  - name: real
    servers: [{{name: s1, address: "{server}"}}]
"""


def routes_haproxy_cfg(listen: Endpoint, server: Endpoint) -> str:
    """HAProxy: the table as ACLs and ``use_backend`` rules (first match wins), no default."""
    rules: list[str] = []
    for i, r in enumerate(route_table()):
        if r.path_prefix is not None:
            rules += [f"acl h{i} hdr(host) -i {r.host}", f"acl p{i} path_beg {r.path_prefix}",
                      f"use_backend {r.backend} if h{i} p{i}"]
        else:
            rules += [f"acl rx path_reg {r.path_regex}", f"use_backend {r.backend} if {{ hdr(host) -i {r.host} }} rx"]
    body = "\n    ".join(rules)
    return f"""\
{HAPROXY_HTTP_DEFAULTS}
frontend fe
    bind {listen}
    {body}

backend decoy
    server s1 {server}

backend real
    server s1 {server}
"""


def routes_nginx_conf(listen: Endpoint, server: Endpoint, prefix: Path) -> str:
    """nginx: one server block per route (server_name and one location); a default server
    answers 503 to anything else, as HAProxy and pyvs without a default backend do."""
    servers = []
    for r in route_table():
        where = r.path_prefix if r.path_prefix is not None else f"~ {r.path_regex}"
        servers.append(f"""\
    server {{
        listen {listen};
        server_name {r.host};
        location {where} {{
            {_nginx_proxy_pass(r.backend)}
        }}
    }}""")
    blocks = "\n".join(servers)
    return f"""\
{_nginx_proxy_head(prefix)}
    {_nginx_upstream("decoy", server)}
    {_nginx_upstream("real", server)}
    server {{
        listen {listen} default_server backlog=4096;
        return 503;
    }}
{blocks}
}}
"""


def routes_pyvs(ws: Workspace, listen: Endpoint, backend: Backend, regex: bool = True) -> ProxyLaunch:
    cfg = ws.write("pyvs/routes.yaml", routes_pyvs_yaml(listen, free_endpoint(), backend.endpoint, regex))
    return ProxyLaunch([PYVS, "run", "-c", str(cfg)], listen, cwd=REPO)


def routes_haproxy(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    cfg = ws.write("haproxy/routes.cfg", routes_haproxy_cfg(listen, backend.endpoint))
    return ProxyLaunch([HAPROXY, "-f", str(cfg), "-db"], listen)


def routes_nginx(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    prefix = ws.path("proxy-nginx", "x").parent
    conf = ws.write("proxy-nginx/routes.conf", routes_nginx_conf(listen, backend.endpoint, prefix))
    return ProxyLaunch(_nginx_argv(prefix, conf), listen)


def routes_probe(target: Endpoint, backend: Backend) -> list[str]:
    status, body = curl(f"http://{target}{ROUTES_PATH}", headers=[f"Host: {ROUTES_HOST}"])
    if status != 200:
        raise BenchError(f"GET {ROUTES_PATH} with Host: {ROUTES_HOST} through the proxy returned "
                         f"{status or 'no answer'} (a pyvs that reads `path: \"~...\"` as an exact path "
                         "answers 503: run it with --routes-no-regex)")
    if body.decode(errors="replace") != HTTP_BODY:
        return [f"body differs from the backend's: {body[:60]!r}"]
    return []


def routes_vs_small(summaries: Sequence[Summary]) -> float | None:
    """pyvs's req/CPU-s with the route table over pyvs's without it, or None if one is missing."""
    by = {s.proxy: s for s in summaries}
    routed, plain = by.get("pyvs"), by.get(ROUTES_BASELINE)
    if routed is None or plain is None or not routed.per_cpu or not plain.per_cpu:
        return None
    return routed.per_cpu / plain.per_cpu


def routes_report(summaries: Sequence[Summary], pyvs_regex: bool = True) -> list[str]:
    """pyvs / HAProxy with the table, and pyvs with the table / pyvs without it against
    ROUTES_TARGET (PASS or FAIL)."""
    lines = [""]
    routed = "pyvs(http-routes)" if pyvs_regex else "pyvs(http-routes, --routes-no-regex)"
    row = next((s for s in summaries if s.proxy == "pyvs"), None)
    if row is not None and row.ratio is not None:
        lines.append(f"{routed} / {REFERENCE}(http-routes): {row.ratio:.2f}")
    share = routes_vs_small(summaries)
    if share is None:
        lines.append(f"{routed} / pyvs(http-small): not measured (needs the pyvs and {ROUTES_BASELINE} rows)")
    else:
        verdict = "PASS" if share >= ROUTES_TARGET else "FAIL"
        lines.append(f"{routed} / pyvs(http-small): {share:.2f} (target >= {ROUTES_TARGET:.2f}): {verdict}")
    return lines


def routes_scenario(pyvs_regex: bool = True) -> Scenario:
    """``pyvs_regex=False`` (--routes-no-regex): pyvs's last route is ``path_prefix: /items/``."""
    fallback = "" if pyvs_regex else f"; pyvs's last route: path_prefix {ROUTES_PREFIX} (--routes-no-regex)"
    return Scenario(
        name="http-routes",
        description=(f"as http-small, through {ROUTES_DECOYS} host+path routes and one host+regex route, "
                     f"matching the last (GET {ROUTES_PATH}, Host: {ROUTES_HOST}); "
                     f"{ROUTES_BASELINE}: pyvs without routes{fallback}"),
        start_backend=functools.partial(http_backend, items=True),
        proxies={"haproxy": routes_haproxy, "nginx": routes_nginx,
                 "pyvs": functools.partial(routes_pyvs, regex=pyvs_regex), ROUTES_BASELINE: http_pyvs},
        load=functools.partial(wrk_load, headers=(f"Host: {ROUTES_HOST}",), path=ROUTES_PATH),
        probe=routes_probe,
        title=f"wrk -H 'Host: {ROUTES_HOST}' {ROUTES_PATH} -t1 -c50"
              + ("" if pyvs_regex else " (pyvs: --routes-no-regex)"),
        report=functools.partial(routes_report, pyvs_regex=pyvs_regex),
    )


# --------------------------------------------------------------------------------------------------
# scenario: http-log (issue 17): http-small with an access log line per request written to a file

LOG_TARGET = 0.85  # pyvs with its access log / HAProxy with option httplog, per proxy CPU-second


def log_haproxy(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    """HAProxy's ``option httplog`` lines to its stdout, which the workspace sends to a file
    (``haproxy.log``): the log is written by the HAProxy process itself, as pyvs's is."""
    head = HAPROXY_HTTP_DEFAULTS.replace("defaults\n", "defaults\n    log global\n    option httplog\n", 1)
    head = head.replace("global\n", "global\n    log stdout format raw local0 info\n", 1)
    cfg = ws.write("haproxy/haproxy.cfg", f"""\
{head}
frontend fe
    bind {listen}
    default_backend be

backend be
    server s1 {backend.endpoint}
""")
    return ProxyLaunch([HAPROXY, "-f", str(cfg), "-db"], listen, notes="option httplog to a file (stdout)")


def log_nginx(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    prefix = ws.path("proxy-nginx", "x").parent
    log = prefix / "access.log"
    conf = ws.write("proxy-nginx/nginx.conf", f"""\
{_nginx_proxy_head(prefix)}
    {_nginx_upstream("be", backend.endpoint)}
    server {{
        listen {listen} backlog=4096;
        access_log {log} combined buffer=64k flush=1s;
        location / {{
            {_nginx_proxy_pass("be")}
        }}
    }}
}}
""")
    return ProxyLaunch(_nginx_argv(prefix, conf), listen, notes="access_log combined buffer=64k")


def log_pyvs(ws: Workspace, listen: Endpoint, backend: Backend) -> ProxyLaunch:
    log = ws.path("pyvs", "access.json")
    return pyvs_launch(ws, listen, backend.endpoint,
                       f'    backend: be\n    access_log: {{path: "{log}", format: ecs}}\n',
                       notes="access_log ecs to a file")


def log_report(summaries: Sequence[Summary]) -> list[str]:
    """pyvs (access log on) / HAProxy (option httplog) against LOG_TARGET."""
    row = next((s for s in summaries if s.proxy == "pyvs"), None)
    if row is None or row.ratio is None:
        return ["", "pyvs(http-log) / haproxy(http-log): not measured"]
    verdict = "PASS" if row.ratio >= LOG_TARGET else "FAIL"
    return ["", f"pyvs(http-log) / haproxy(http-log): {row.ratio:.2f} (target >= {LOG_TARGET:.2f}): {verdict}"]


SCENARIOS: dict[str, Scenario] = {
    "http-small": Scenario(
        name="http-small",
        description="HTTP/1.1 keep-alive GET /, ~100-byte body from one nginx backend, wrk --latency",
        start_backend=http_backend,
        proxies={"haproxy": http_haproxy, "nginx": http_nginx, "pyvs": http_pyvs},
        load=wrk_load,
        probe=http_probe,
    ),
    "http-close": Scenario(
        name="http-close",
        description="as http-small, each request on a new connection (Connection: close): the cost of a "
                    "connection (accept, state, close) more than of a request",
        start_backend=http_backend,
        proxies={"haproxy": http_haproxy, "nginx": http_nginx, "pyvs": http_pyvs},
        load=functools.partial(wrk_load, headers=("Connection: close",)),
        probe=http_probe,
    ),
    "http-browser": Scenario(
        name="http-browser",
        description="as http-small, with the request head a browser sends (12 fields, ~600 bytes)",
        start_backend=http_backend,
        proxies={"haproxy": http_haproxy, "nginx": http_nginx, "pyvs": http_pyvs},
        load=functools.partial(wrk_load, headers=BROWSER_HEADERS),
        probe=http_probe,
        title="wrk (browser head) -t1 -c50",
    ),
    "http-post": Scenario(
        name="http-post",
        description="as http-small, but each request a 26-byte JSON POST (bench/post.lua)",
        start_backend=http_backend,
        proxies={"haproxy": http_haproxy, "nginx": http_nginx, "pyvs": http_pyvs},
        load=functools.partial(wrk_load, script=Path(__file__).resolve().parent / "post.lua"),
        probe=http_probe,
        title="wrk -s post.lua -t1 -c50",
    ),
    "http-routes": routes_scenario(),
    "http-log": Scenario(
        name="http-log",
        description="as http-small, each proxy writing an access-log line per request to a file "
                    "(HAProxy option httplog, nginx combined, pyvs ECS JSON)",
        start_backend=http_backend,
        proxies={"haproxy": log_haproxy, "nginx": log_nginx, "pyvs": log_pyvs},
        load=wrk_load,
        probe=http_probe,
        report=log_report,
    ),
}


def _add_tcp_scenarios() -> None:
    """tcp-bulk and tcp-connrate live in bench/tcp_scenarios.py (built from this module's helpers)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tcp_scenarios

    SCENARIOS.update(tcp_scenarios.scenarios(sys.modules[__name__]))


_add_tcp_scenarios()


def _add_tls_scenarios() -> None:
    """https-small and tls-handshake live in bench/tls_scenarios.py (built as the tcp ones are)."""
    import tls_scenarios

    SCENARIOS.update(tls_scenarios.scenarios(sys.modules[__name__]))


_add_tls_scenarios()


def _add_h2_scenarios() -> None:
    """h2-small (h2load, 100 streams per connection) lives in bench/h2_scenarios.py."""
    import h2_scenarios

    SCENARIOS.update(h2_scenarios.scenarios(sys.modules[__name__]))


_add_h2_scenarios()


def _add_shared_scenarios() -> None:
    """http-shared (2 workers, leastconn + stick on src) lives in bench/shared_scenarios.py."""
    import shared_scenarios

    SCENARIOS.update(shared_scenarios.scenarios(sys.modules[__name__]))


_add_shared_scenarios()


def _add_accel_scenarios() -> None:
    """http-gzip (response compression vs nginx gzip and HAProxy compression) lives in bench/accel_scenarios.py."""
    import accel_scenarios

    SCENARIOS.update(accel_scenarios.scenarios(sys.modules[__name__]))


_add_accel_scenarios()


# --------------------------------------------------------------------------------------------------
# running


@dataclass
class RunResult:
    proxy: str
    ok: bool
    error: str = ""
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    work: float | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    per_cpu: float | None = None
    errors: int = 0
    processes: int = 0
    warnings: list[str] = field(default_factory=list)
    output: str = ""  # the load tool's raw output


def run_one(scn: Scenario, proxy: str, ws: Workspace, backend: Backend, opts: Options) -> RunResult:
    listen = free_endpoint()
    try:
        launch = scn.proxies[proxy](ws, listen, backend)
    except OSError as e:
        return RunResult(proxy, False, f"config: {e}")
    try:
        proc = ws.start(proxy, launch.argv, cwd=launch.cwd)
    except OSError as e:
        return RunResult(proxy, False, f"cannot start {launch.argv[0]}: {e}")
    try:
        try:
            wait_port(proc, launch.listen, READY_TIMEOUT)
            warnings = _probe_until_ready(scn, proc, launch.listen, backend)
        except BenchError as e:
            tail = ws.log_tail(proxy)
            return RunResult(proxy, False, f"{e}" + (f"\n{tail}" if tail else ""))
        if opts.warmup:
            scn.load(launch.listen, opts, opts.warmup)
        before = CpuSample.take(proc.pid)
        result = scn.load(launch.listen, opts, opts.duration)
        after = CpuSample.take(proc.pid)
        if proc.poll() is not None or not after.ticks:
            return RunResult(proxy, False, f"exited during the run ({proc.returncode})\n{ws.log_tail(proxy)}")
        cpu = before.seconds_until(after)
        if set(before.ticks) != set(after.ticks):
            warnings.append(f"process tree changed during the run: {sorted(before.ticks)} -> "
                            f"{sorted(after.ticks)}")
        if result.errors:
            warnings.append(f"{result.errors} load errors (socket errors / non-2xx)")
        return RunResult(
            proxy, True, rate=result.rate, p50_ms=result.p50_ms, p99_ms=result.p99_ms,
            work=result.work, seconds=result.seconds, cpu_seconds=cpu,
            per_cpu=result.work / cpu if cpu > 0 else None,
            errors=result.errors, processes=len(after.ticks), warnings=warnings, output=result.raw,
        )
    except BenchError as e:
        return RunResult(proxy, False, str(e))
    finally:
        ws.stop(proc)


def _probe_until_ready(scn: Scenario, proc: subprocess.Popen[bytes], ep: Endpoint,
                       backend: Backend) -> list[str]:
    """The port may accept before a forked worker serves: retry the probe for a few seconds."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            return scn.probe(ep, backend)
        except BenchError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


@dataclass
class Summary:
    proxy: str
    runs: int
    failed: int
    rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    per_cpu: float | None
    ratio: float | None
    cpu_seconds: float | None
    error: str = ""
    warnings: list[str] = field(default_factory=list)


def summarise(results: dict[str, list[RunResult]], by: str = "per_cpu") -> list[Summary]:
    out: list[Summary] = []
    for proxy, runs in results.items():
        ok = [r for r in runs if r.ok]
        failed = [r for r in runs if not r.ok]
        warnings = sorted({w for r in runs for w in r.warnings})
        out.append(Summary(
            proxy=proxy, runs=len(runs), failed=len(failed),
            rate=_median([r.rate for r in ok]), p50_ms=_median([r.p50_ms for r in ok]),
            p99_ms=_median([r.p99_ms for r in ok]), per_cpu=_median([r.per_cpu for r in ok]),
            cpu_seconds=_median([r.cpu_seconds for r in ok]), ratio=None,
            error=failed[0].error if failed else "", warnings=warnings,
        ))
    ref = next((getattr(s, by) for s in out if s.proxy == REFERENCE), None)
    for s in out:
        if ref and getattr(s, by) is not None:
            s.ratio = getattr(s, by) / ref
    return out


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def print_table(scn: Scenario, summaries: list[Summary], opts: Options) -> None:
    header = ["proxy", scn.rate_label, "p50", "p99", scn.per_cpu_label, f"vs {REFERENCE}"]
    rows: list[list[str]] = []
    for s in summaries:
        if s.failed == s.runs:
            rows.append([s.proxy, "FAILED (below)", "-", "-", "-", "-"])
            continue
        name = s.proxy if not s.failed else f"{s.proxy} ({s.failed}/{s.runs} failed)"
        rows.append([name, _fmt(s.rate, scn.rate_format), _fmt(s.p50_ms, ".2f", " ms"),
                     _fmt(s.p99_ms, ".2f", " ms"), _fmt(s.per_cpu, scn.per_cpu_format), _fmt(s.ratio, ".2f")])
    load = scn.title or f"wrk -t{opts.threads} -c{opts.connections}"
    title = (f"{scn.name}: {load} -d{opts.duration}s, median of {opts.repeat}, 1 worker per proxy, "
             f"{os.cpu_count()} CPUs; ratio of {'throughput' if scn.ratio_by == 'rate' else scn.per_cpu_label}")
    print(title)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    else:
        table = Table()
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        Console().print(table)
    if scn.report is not None:
        for line in scn.report(summaries):
            print(line)
    for s in summaries:
        if s.failed:
            print(f"\n{s.proxy} failed:\n{s.error.strip()}")
        for w in s.warnings:
            print(f"warning: {s.proxy}: {w}")


def write_json(scn: Scenario, opts: Options, backend: Backend, results: dict[str, list[RunResult]],
               summaries: list[Summary], started: dt.datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S")
    path = RESULTS_DIR / f"{scn.name.split('-')[0]}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = RESULTS_DIR / f"{scn.name.split('-')[0]}-{stamp}-{n}.json"
    doc = {
        "scenario": scn.name,
        "description": scn.description,
        "started": started.isoformat(timespec="seconds"),
        "options": asdict(opts),
        "reference": REFERENCE,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "clk_tck": CLK_TCK,
            "loadavg_at_end": os.getloadavg(),
        },
        "versions": {
            "pyvs": git_revision(),
            "pyvs_head_scanner": head_scanner(),
            "haproxy": tool_version([HAPROXY, "-v"]),
            "nginx": tool_version([NGINX, "-v"]),
            "wrk": tool_version([WRK, "--version"]),
        },
        "backend": {"endpoint": str(backend.endpoint), **backend.info},
        "summary": [asdict(s) for s in summaries],
        "report": [line for line in scn.report(summaries) if line] if scn.report is not None else [],
        "runs": {p: [asdict(r) for r in rs] for p, rs in results.items()},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def head_scanner() -> str:
    """Which head checker the pyvs under test uses: the figures differ by ~25%."""
    from pyvs.http import h1

    return "C scanner + llhttp" if h1._scanner is not None else "llhttp only"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so the ``finally`` clean-up runs (SIGINT
    too, because a shell starts background jobs with SIGINT ignored)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def check_tools(proxies: Sequence[str]) -> None:
    needed = {WRK: "wrk", CURL: "curl", NGINX: "nginx-light"}
    if "haproxy" in proxies:
        needed[HAPROXY] = "haproxy"
    missing = [f"{exe} (apt package {pkg})" for exe, pkg in needed.items() if not shutil.which(exe)]
    if missing:
        raise BenchError("missing tools: " + ", ".join(missing) + " - run `make bench` to install them")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenario", default="http-small", choices=sorted(SCENARIOS))
    p.add_argument("--duration", type=parse_duration, default=10, help="measured seconds per run (10s)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds before measuring (1; 0 = none)")
    p.add_argument("--connections", type=int, default=50, help="concurrent connections (50)")
    p.add_argument("--threads", type=int, default=1, help="load-tool threads (1)")
    p.add_argument("--only", default="",
                   help="comma-separated proxies to run (default: every proxy of the scenario but the "
                        "opt-in ones, such as 'direct')")
    p.add_argument("--repeat", type=int, default=1, help="runs per proxy; the median is reported (1)")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("--routes-no-regex", action="store_true",
                   help=f"http-routes only: pyvs's last route matches path_prefix {ROUTES_PREFIX} instead of "
                        "the regex, for a pyvs without `path: \"~regex\"` routes (HAProxy and nginx keep the regex)")
    args = p.parse_args(argv)
    if args.routes_no_regex and args.scenario != "http-routes":
        p.error("--routes-no-regex is for --scenario http-routes")
    scn = SCENARIOS[args.scenario]
    supported = scn.proxies
    default = ",".join(x for x in supported if x not in scn.opt_in)
    only = [x.strip() for x in (args.only or default).split(",") if x.strip()]
    bad = [x for x in only if x not in supported]
    if bad or not only:
        p.error(f"--only: unknown proxy {', '.join(bad) or '(none)'}; choose from {', '.join(supported)}")
    if args.repeat < 1 or args.connections < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--repeat, --connections and --threads must be >= 1, --warmup >= 0")
    if args.threads > args.connections:
        p.error("--threads must not exceed --connections")
    # Always run in the canonical order (reference first) whatever order --only lists.
    args.proxies = tuple(x for x in (*PROXY_ORDER, *supported) if x in only and x in supported)
    args.proxies = tuple(dict.fromkeys(args.proxies))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scn = routes_scenario(pyvs_regex=False) if args.routes_no_regex else SCENARIOS[args.scenario]
    opts = Options(duration=args.duration, connections=args.connections, threads=args.threads,
                   warmup=args.warmup, repeat=args.repeat, proxies=args.proxies, keep=args.keep)
    started = dt.datetime.now()
    ws: Workspace | None = None
    try:
        with sigterm_as_interrupt():
            check_tools(opts.proxies)
            ws = Workspace(keep=opts.keep)
            log(f"scenario {scn.name}: {scn.description}")
            log(f"pyvs heads checked by: {head_scanner()}")
            backend = scn.start_backend(ws)
            log(f"backend on {backend.endpoint} (pid {backend.proc.pid})")
            results: dict[str, list[RunResult]] = {p: [] for p in opts.proxies}
            # Interleave the proxies across repeats so slow drift of the machine hits all of them.
            for i in range(opts.repeat):
                for proxy in opts.proxies:
                    tag = f" run {i + 1}/{opts.repeat}" if opts.repeat > 1 else ""
                    log(f"{proxy}{tag}: start, warm up {opts.warmup}s, measure {opts.duration}s")
                    r = run_one(scn, proxy, ws, backend, opts)
                    results[proxy].append(r)
                    if r.ok:
                        log(f"{proxy}{tag}: {_fmt(r.rate, scn.rate_format)} {scn.rate_label}, "
                            f"{r.cpu_seconds:.2f} CPU-s, {_fmt(r.per_cpu, scn.per_cpu_format)} {scn.per_cpu_label}")
                    else:
                        log(f"{proxy}{tag}: FAILED: {r.error.strip().splitlines()[0] if r.error else ''}")
            summaries = summarise(results, scn.ratio_by)
            print()
            print_table(scn, summaries, opts)
            if not args.no_json:
                path = write_json(scn, opts, backend, results, summaries, started)
                print(f"\nresults: {path.relative_to(REPO)}")
        return 0 if all(s.failed < s.runs for s in summaries) else 1
    except BenchError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if ws is not None:
            # A second Ctrl-C must not leave processes or files behind.
            old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                ws.close()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())

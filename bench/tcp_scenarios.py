"""Layer-4 benchmark scenarios for bench/run.py: ``tcp-bulk`` and ``tcp-connrate``.

Both put four proxies in front of the same nginx backend, each in its plain TCP mode:
HAProxy ``mode tcp``, nginx ``stream`` (module ``ngx_stream_module``, Debian package
``libnginx-mod-stream``), pyvs ``mode: tcp`` (user space) and pyvs with
``dataplane: nftables`` (the kernel DNATs; pyvs only writes the table). The client
speaks HTTP/1.1 through them, so the backend is the same nginx as for ``http-small``.

* ``tcp-bulk`` -- 4 connections, each fetching a 100 MiB object again and again (one
  object per connection, ``Connection: close``) with a client in this process that
  reads into one 1 MiB buffer per connection. The figure is GB/s through the proxy;
  every complete object's length is checked.
* ``tcp-connrate`` -- wrk with ``Connection: close``: one TCP connection per request,
  so the figure is connections per second.

The ratio column compares *throughput* (``ratio_by = "rate"``), not work per proxy
CPU-second: the kernel data plane spends its CPU in softirq context that is charged
to whatever process runs, so "pyvs CPU" would be near zero and meaningless. The
targets (issue 5) are user space >= 0.8 x HAProxy and nftables >= 1.5 x HAProxy.

A ``direct`` row (no proxy: the client talks to the backend; ``--only direct``, not run
by default) shows the ceiling of the machine for each workload; its CPU column is empty.
Run it on its own: its connections leave conntrack entries whose reply tuples clash
with the DNAT of a ``pyvs-nft`` run after it (SYNs dropped, 1 s retransmits).

This module holds no state; ``scenarios(run)`` receives bench/run.py itself so the
proxies are launched, sampled and stopped by the same machinery as every scenario.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

BLOB_SIZE = 100 * 1024 * 1024
BULK_CONNECTIONS = 4
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
_REQUEST = b"GET /blob HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def scenarios(run: Any) -> dict[str, Any]:
    """Build the two scenarios with bench/run.py's own types and helpers."""

    # ------------------------------------------------------------------ backends
    def bulk_backend(ws: Any) -> Any:
        root = ws.path("bulk-root", "x").parent
        with (root / "blob").open("wb") as f:
            block = bytes(range(256)) * 4096  # 1 MiB
            for _ in range(BLOB_SIZE // len(block)):
                f.write(block)
        (root / "probe").write_text("pyvs tcp probe\n")
        ep = run.free_endpoint()
        private = run.free_endpoint()
        prefix = ws.path("backend-nginx", "x").parent
        conf = ws.write("backend-nginx/nginx.conf", f"""\
{run._nginx_backend_head(prefix)}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    server {{
        listen {ep} backlog=4096;
        listen {private} backlog=4096;
        root {root};
        location = / {{ return 200 "{run.HTTP_BODY.rstrip()}\\n"; }}
    }}
}}
""")
        proc = ws.start("backend-nginx", run._nginx_argv(prefix, conf))
        try:
            run.wait_port(proc, ep, 10)
        except run.BenchError as e:
            raise run.BenchError(f"backend nginx: {e}\n{ws.log_tail('backend-nginx')}") from None
        return run.Backend(ep, proc, {"server": "nginx", "object_bytes": BLOB_SIZE}, private=private)

    # ------------------------------------------------------------------ proxies
    def tcp_haproxy(ws: Any, listen: Any, backend: Any) -> Any:
        cfg = ws.write("haproxy/haproxy-tcp.cfg", f"""\
global
    nbthread 1
    maxconn 8192

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind {listen}
    default_backend be

backend be
    server s1 {backend.endpoint}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def tcp_nginx(ws: Any, listen: Any, backend: Any) -> Any:
        if not STREAM_MODULE.exists():
            raise OSError(f"{STREAM_MODULE} is missing (apt package libnginx-mod-stream)")
        prefix = ws.path("proxy-nginx-stream", "x").parent
        conf = ws.write("proxy-nginx-stream/nginx.conf", f"""\
load_module {STREAM_MODULE};
daemon off;
{run._nginx_user_line()}
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 8192; }}
stream {{
    upstream be {{ server {backend.endpoint}; }}
    server {{
        listen {listen} backlog=4096;
        proxy_pass be;
    }}
}}
""")
        return run.ProxyLaunch(run._nginx_argv(prefix, conf), listen)

    def pyvs_config(ws: Any, listen: Any, backend: Any, name: str, extra: str, server: Any = None) -> Any:
        admin = run.free_endpoint()
        cfg = ws.write(f"{name}/pyvs.yaml", f"""\
global: {{workers: 1}}
admin: {{listen: "{admin}"}}
listeners:
  - {{name: tcp, mode: tcp, bind: ["{listen}"], backend: be{extra}}}
backends:
  - name: be
    servers: [{{name: s1, address: "{server or backend.endpoint}"}}]
""")
        return run.ProxyLaunch([run.PYVS, "run", "-c", str(cfg)], listen, cwd=run.REPO)

    def tcp_pyvs(ws: Any, listen: Any, backend: Any) -> Any:
        return pyvs_config(ws, listen, backend, "pyvs", "")

    nft_listen: dict[str, Any] = {}

    def tcp_pyvs_nft(ws: Any, listen: Any, backend: Any) -> Any:
        # Client and backend are on this host (loopback): no masquerade is needed.
        # Conntrack keeps every connection ~2 minutes (TIME_WAIT). A DNATed connection
        # whose reply tuple (backend -> client port) is still held by an older entry
        # with another original tuple is dropped (SYN retransmits, ~1 s each). So the
        # kernel data plane gets a backend address no other proxy uses (run.Backend.
        # private), and every run of it in one benchmark keeps the same listen address:
        # a new SYN with an old entry's original tuple reopens that entry instead.
        listen = nft_listen.setdefault("ep", listen)
        return pyvs_config(ws, listen, backend, "pyvs-nft",
                           ", dataplane: nftables, kernel: {table: pyvs_bench, masquerade: false}",
                           server=backend.private)

    def tcp_direct(ws: Any, listen: Any, backend: Any) -> Any:
        # No proxy: the load goes straight to the backend, and an idle process stands in
        # for the proxy. Its rate is the ceiling of this machine for the scenario (client
        # and backend share the two cores): a target above it cannot be met by any proxy.
        return run.ProxyLaunch(["sleep", "infinity"], backend.endpoint, notes="no proxy")

    proxies = {"haproxy": tcp_haproxy, "nginx": tcp_nginx, "pyvs": tcp_pyvs, "pyvs-nft": tcp_pyvs_nft,
               "direct": tcp_direct}

    # ------------------------------------------------------------------ load and probe
    def probe(target: Any, backend: Any) -> list[str]:
        status, body = run.curl(f"http://{target}/")
        if status != 200 or body.decode(errors="replace") != run.HTTP_BODY:
            raise run.BenchError(f"GET / through the proxy returned {status or 'no answer'}")
        return []

    def bulk_load(target: Any, opts: Any, seconds: int) -> Any:
        deadline = time.monotonic() + seconds
        got = [0] * BULK_CONNECTIONS
        objects = [0] * BULK_CONNECTIONS
        errors = [0] * BULK_CONNECTIONS
        reasons: list[str] = []

        def fetch(i: int) -> None:
            buf = bytearray(1 << 20)
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection((target.host, target.port), timeout=10) as s:
                        s.sendall(_REQUEST)
                        n = s.recv_into(buf)
                        head, sep, _ = bytes(buf[:n]).partition(b"\r\n\r\n")
                        if not sep or not head.startswith(b"HTTP/1.1 200"):
                            errors[i] += 1
                            reasons.append(f"bad head {bytes(buf[:min(n, 40)])!r}")
                            continue
                        body = n - len(head) - 4
                        while body < BLOB_SIZE and time.monotonic() < deadline:
                            m = s.recv_into(buf)
                            if not m:
                                break
                            body += m
                        got[i] += body
                        if body == BLOB_SIZE:
                            objects[i] += 1
                        elif time.monotonic() < deadline:
                            errors[i] += 1  # cut short before the end of the run
                            reasons.append(f"short object: {body} bytes")
                except OSError as exc:
                    errors[i] += 1
                    reasons.append(f"{type(exc).__name__}: {exc}")

        start = time.monotonic()
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(BULK_CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        elapsed = time.monotonic() - start
        gigabytes = sum(got) / 1e9
        return run.LoadResult(work=gigabytes, work_unit="GB", seconds=elapsed, rate=gigabytes / elapsed,
                              errors=sum(errors), raw=f"{sum(objects)} complete objects of {BLOB_SIZE} bytes, "
                              f"{sum(got)} bytes in {elapsed:.2f}s over {BULK_CONNECTIONS} connections"
                              + "".join(f"\nerror: {r}" for r in reasons[:10]))

    def connrate_load(target: Any, opts: Any, seconds: int) -> Any:
        argv = [run.WRK, f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s", "--timeout", "5s",
                "--latency", "-H", "Connection: close", f"http://{target}/"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise run.BenchError("wrk did not finish in time") from None
        if out.returncode != 0:
            raise run.BenchError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
        result = run.parse_wrk(out.stdout)
        result.work_unit = "connections"
        return result

    return {
        "tcp-bulk": run.Scenario(
            name="tcp-bulk",
            description=f"TCP bulk: {BULK_CONNECTIONS} connections fetching 100 MiB objects through the proxy "
                        "(HTTP over mode tcp / stream / pyvs tcp / pyvs nftables)",
            start_backend=bulk_backend, proxies=proxies, load=bulk_load, probe=probe,
            rate_label="GB/s", per_cpu_label="GB/CPU-s", rate_format=".2f", per_cpu_format=".2f",
            ratio_by="rate", title=f"{BULK_CONNECTIONS} connections x 100 MiB objects", opt_in=("direct",),
        ),
        "tcp-connrate": run.Scenario(
            name="tcp-connrate",
            description="TCP connection rate: wrk with Connection: close (one connection per request), "
                        "~100-byte responses",
            start_backend=run.http_backend, proxies=proxies, load=connrate_load, probe=probe,
            rate_label="conn/s", per_cpu_label="conn/CPU-s", ratio_by="rate",
            title="wrk Connection: close", opt_in=("direct",),
        ),
    }

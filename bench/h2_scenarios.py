"""HTTP/2 benchmark scenario for bench/run.py: ``h2-small``.

HAProxy (``bind ... proto h2``), nginx (``listen ... http2``, h2c with prior
knowledge) and pyvs (``http2: true``) take cleartext HTTP/2 from h2load and forward
over pooled HTTP/1.1 to the nginx backend of ``http-small``; cleartext so that the
figure is the cost of HTTP/2 itself (``https-small`` measures TLS). h2load opens a
few connections with 100 concurrent streams each (``-m 100``), small GETs; the
figure is requests per proxy CPU-second (target: >= 0.8 x HAProxy).

This module holds no state; ``scenarios(run)`` receives bench/run.py itself.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

H2LOAD = "h2load"
STREAMS = 100  # concurrent streams per connection


def parse_h2load(run: Any, out: str) -> Any:
    """requests done, seconds, req/s and failures of an h2load run."""
    fin = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out)
    if fin is None or req is None:
        raise run.BenchError(f"cannot parse h2load output:\n{out.strip()}")
    seconds = float(fin.group(1)) / (1000.0 if fin.group(2) == "ms" else 1.0)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7))
    if status is not None:
        errors += int(status.group(3)) + int(status.group(4))
    return run.LoadResult(work=float(req.group(4)), work_unit="requests", seconds=seconds,
                          rate=float(fin.group(3)), errors=errors, raw=out)


def scenarios(run: Any) -> dict[str, Any]:
    """Build the scenario with bench/run.py's own types and helpers."""

    def haproxy(ws: Any, listen: Any, backend: Any) -> Any:
        cfg = ws.write("haproxy/haproxy.cfg", f"""\
{run.HAPROXY_HTTP_DEFAULTS}
frontend fe
    bind {listen} proto h2
    default_backend be

backend be
    server s1 {backend.endpoint}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def nginx(ws: Any, listen: Any, backend: Any) -> Any:
        prefix = ws.path("proxy-nginx", "x").parent
        conf = ws.write("proxy-nginx/nginx.conf", f"""\
{run._nginx_proxy_head(prefix)}
    {run._nginx_upstream("be", backend.endpoint)}
    server {{
        listen {listen} http2 backlog=4096;
        http2_max_concurrent_streams {STREAMS * 2};
        location / {{
            {run._nginx_proxy_pass("be")}
        }}
    }}
}}
""")
        return run.ProxyLaunch(run._nginx_argv(prefix, conf), listen)

    def pyvs(ws: Any, listen: Any, backend: Any) -> Any:
        # 100 streams x connections in flight: the pool keeps them all (HAProxy does)
        return run.pyvs_launch(ws, listen, backend.endpoint, "    backend: be\n    http2: true\n",
                               backend="    pool: {max_idle: 1024}\n")

    def probe(target: Any, backend: Any) -> list[str]:
        argv = [run.CURL, "-sS", "--noproxy", "*", "--max-time", "5", "--http2-prior-knowledge",
                "-w", "\n%{http_version}", f"http://{target}/"]
        out = subprocess.run(argv, capture_output=True, timeout=10)
        if out.returncode != 0:
            raise run.BenchError(f"h2c GET http://{target}/ failed: curl exit {out.returncode}")
        body, _, version = out.stdout.decode(errors="replace").rpartition("\n")
        problems = []
        if version != "2":
            problems.append(f"answered over HTTP/{version}, not HTTP/2")
        if body != run.HTTP_BODY:
            problems.append(f"body differs from the backend's: {body[:60]!r}")
        return problems

    def h2load(target: Any, opts: Any, seconds: int) -> Any:
        conns = max(1, min(opts.connections // 10, 10))  # -c50 -> 5 connections x 100 streams
        argv = [H2LOAD, f"-c{conns}", f"-m{STREAMS}", "-t1", f"-D{seconds}", f"http://{target}/"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise run.BenchError("h2load did not finish in time") from None
        if out.returncode != 0:
            raise run.BenchError(f"h2load failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
        return parse_h2load(run, out.stdout)

    return {
        "h2-small": run.Scenario(
            name="h2-small",
            description=f"h2c (prior knowledge) GET /, ~100-byte body, {STREAMS} streams per connection, "
                        "to one nginx backend over pooled HTTP/1.1",
            start_backend=run.http_backend, proxies={"haproxy": haproxy, "nginx": nginx, "pyvs": pyvs},
            load=h2load, probe=probe, title=f"h2load -m{STREAMS}",
        ),
    }

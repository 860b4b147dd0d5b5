"""Acceleration benchmark scenarios for bench/run.py: ``http-gzip``.

``http-gzip``: wrk GETs a 32 KiB HTML page (deterministic text, served by the nginx
backend with its own gzip off) with ``Accept-Encoding: gzip``; each proxy compresses
it with gzip at level 1 (nginx ``gzip_comp_level 1``, pyvs ``level: {gzip: 1}``;
HAProxy's ``compression algo gzip`` has no level setting, it uses its library's
default). The figure is requests per proxy CPU-second; the report line turns it into
MB of uncompressed input per proxy CPU-second, the quantity issue 16 compares.

``http-cache-1k`` / ``http-cache-100k``: wrk GETs one object (1 KiB or 100 KiB, the
backend nginx sends ``Cache-Control: max-age=3600``) that every proxy keeps in its RAM
cache (nginx ``proxy_cache``, HAProxy ``cache``, pyvs ``cache``): after the first
request every answer is a hit, so the figure is cache hits per proxy CPU-second
(issue 16's target: pyvs >= 1.0 x nginx for the 1 KiB hit).

This module holds no state; ``scenarios(run)`` receives bench/run.py itself.
"""

from __future__ import annotations

import functools
import gzip
import random
import subprocess
from collections.abc import Sequence
from typing import Any

PAGE = "/page.html"
PAGE_SIZE = 32 * 1024
LEVEL = 1
CACHE_OBJECTS = {"/1k": 1024, "/100k": 100 * 1024}


def page_text() -> bytes:
    """32 KiB of HTML-like text, the same in every run (seeded)."""
    rnd = random.Random(16)
    words = ["<div>", "</div>", "class", "proxy", "balance", "server", "pyvs", "nginx", "cache", "\n"]
    out = ["<html><body>\n"]
    size = len(out[0])
    while size < PAGE_SIZE:
        w = rnd.choice(words) + " "
        out.append(w)
        size += len(w)
    return "".join(out).encode()[:PAGE_SIZE]


def scenarios(run: Any) -> dict[str, Any]:
    """Build the scenario with bench/run.py's own types and helpers."""

    def cache_backend(ws: Any) -> Any:
        ep = run.free_endpoint()
        prefix = ws.path("backend-nginx", "x").parent
        root = ws.path("backend-nginx", "www", "x").parent
        for name, size in CACHE_OBJECTS.items():
            (root / name.lstrip("/")).write_bytes(page_text()[:size] if size <= PAGE_SIZE else
                                                   (page_text() * (size // PAGE_SIZE + 1))[:size])
        conf = ws.write("backend-nginx/nginx.conf", f"""\
{run._nginx_backend_head(prefix)}
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    default_type text/plain;
    server {{
        listen {ep} backlog=4096;
        root {root};
        etag off;
        add_header Cache-Control "public, max-age=3600";
    }}
}}
""")
        proc = ws.start("backend-nginx", run._nginx_argv(prefix, conf))
        try:
            run.wait_port(proc, ep, 10)
        except run.BenchError as e:
            raise run.BenchError(f"backend nginx: {e}\n{ws.log_tail('backend-nginx')}") from None
        return run.Backend(ep, proc, {"server": "nginx"})

    def cache_haproxy(ws: Any, listen: Any, be: Any) -> Any:
        cfg = ws.write("haproxy/haproxy.cfg", f"""\
{run.HAPROXY_HTTP_DEFAULTS}
cache c
    total-max-size 64
    max-object-size 1048576
    max-age 3600

frontend fe
    bind {listen}
    default_backend be

backend be
    http-request cache-use c
    http-response cache-store c
    server s1 {be.endpoint}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def cache_nginx(ws: Any, listen: Any, be: Any) -> Any:
        prefix = ws.path("proxy-nginx", "x").parent
        conf = ws.write("proxy-nginx/nginx.conf", f"""\
{run._nginx_proxy_head(prefix)}
    proxy_cache_path {prefix / 'cache'} levels=1:2 keys_zone=c:10m max_size=64m inactive=1h use_temp_path=off;
    {run._nginx_upstream("be", be.endpoint)}
    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_cache c;
            proxy_cache_lock on;
            {run._nginx_proxy_pass("be")}
        }}
    }}
}}
""")
        return run.ProxyLaunch(run._nginx_argv(prefix, conf), listen)

    def cache_pyvs(ws: Any, listen: Any, be: Any) -> Any:
        return run.pyvs_launch(ws, listen, be.endpoint, "    routes:\n      - backend: be\n"
                               "        cache: {size: 64m, max_object: 1m, x_cache: false}\n")

    def cache_probe(path: str) -> Any:
        def probe(target: Any, be: Any) -> list[str]:
            for _ in range(2):  # the second one is a hit
                status, body = run.curl(f"http://{target}{path}")
                if status != 200 or len(body) != CACHE_OBJECTS[path]:
                    raise run.BenchError(f"GET {path} through the proxy: {status}, {len(body)} bytes")
            return []
        return probe

    def backend(ws: Any) -> Any:
        ep = run.free_endpoint()
        prefix = ws.path("backend-nginx", "x").parent
        root = ws.path("backend-nginx", "www", "x").parent
        (root / PAGE.lstrip("/")).write_bytes(page_text())
        conf = ws.write("backend-nginx/nginx.conf", f"""\
{run._nginx_backend_head(prefix)}
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    types {{ text/html html; }}
    server {{
        listen {ep} backlog=4096;
        root {root};
        etag off;
    }}
}}
""")
        proc = ws.start("backend-nginx", run._nginx_argv(prefix, conf))
        try:
            run.wait_port(proc, ep, 10)
        except run.BenchError as e:
            raise run.BenchError(f"backend nginx: {e}\n{ws.log_tail('backend-nginx')}") from None
        status, body = run.curl(f"http://{ep}{PAGE}")
        if status != 200 or body != page_text():
            raise run.BenchError(f"backend nginx answered {status} ({len(body)} bytes) to GET {PAGE}")
        return run.Backend(ep, proc, {"server": "nginx", "body_bytes": PAGE_SIZE})

    def haproxy(ws: Any, listen: Any, be: Any) -> Any:
        cfg = ws.write("haproxy/haproxy.cfg", f"""\
{run.HAPROXY_HTTP_DEFAULTS}
frontend fe
    bind {listen}
    default_backend be

backend be
    compression algo gzip
    compression type text/html
    server s1 {be.endpoint}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def nginx(ws: Any, listen: Any, be: Any) -> Any:
        prefix = ws.path("proxy-nginx", "x").parent
        conf = ws.write("proxy-nginx/nginx.conf", f"""\
{run._nginx_proxy_head(prefix)}
    gzip on;
    gzip_comp_level {LEVEL};
    gzip_types text/html;
    gzip_min_length 256;
    gzip_vary on;
    {run._nginx_upstream("be", be.endpoint)}
    server {{
        listen {listen} backlog=4096;
        location / {{
            {run._nginx_proxy_pass("be")}
        }}
    }}
}}
""")
        return run.ProxyLaunch(run._nginx_argv(prefix, conf), listen)

    def pyvs(ws: Any, listen: Any, be: Any) -> Any:
        return run.pyvs_launch(ws, listen, be.endpoint, "    routes:\n      - backend: be\n        compress: "
                               f"{{algorithms: [gzip], types: [text/html], min_size: 256, level: {{gzip: {LEVEL}}}}}\n")

    def probe(target: Any, be: Any) -> list[str]:
        argv = [run.CURL, "-s", "--noproxy", "*", "--max-time", "5", "-H", "Accept-Encoding: gzip",
                "-D", "-", f"http://{target}{PAGE}"]
        out = subprocess.run(argv, capture_output=True, timeout=10)
        if out.returncode != 0:
            raise run.BenchError(f"GET {PAGE} failed: curl exit {out.returncode}")
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        if b"content-encoding: gzip" not in head.lower():
            raise run.BenchError(f"GET {PAGE} through the proxy was not gzip-compressed")
        if gzip.decompress(body) != page_text():
            raise run.BenchError(f"GET {PAGE}: the decompressed body differs from the backend's")
        return [f"compressed {PAGE_SIZE} -> {len(body)} bytes"]

    def report(summaries: Sequence[Any]) -> list[str]:
        lines = ["", f"gzip input MB per proxy CPU-second (level {LEVEL}; {PAGE_SIZE // 1024} KiB page):"]
        nginx_mb = None
        for s in summaries:
            if s.per_cpu is None:
                continue
            mb = s.per_cpu * PAGE_SIZE / 1e6
            if s.proxy == "nginx":
                nginx_mb = mb
            lines.append(f"  {s.proxy}: {mb:,.1f} MB/CPU-s")
        pyvs_row = next((s for s in summaries if s.proxy == "pyvs" and s.per_cpu), None)
        if pyvs_row is not None and nginx_mb:
            lines.append(f"  pyvs / nginx: {pyvs_row.per_cpu * PAGE_SIZE / 1e6 / nginx_mb:.2f}")
        return lines

    cache_proxies = {"haproxy": cache_haproxy, "nginx": cache_nginx, "pyvs": cache_pyvs}
    cache_scenarios = {
        f"http-cache-{label}": run.Scenario(
            name=f"http-cache-{label}",
            description=f"GET {path} ({label.upper()}iB, max-age=3600) answered from each proxy's RAM cache",
            start_backend=cache_backend, proxies=cache_proxies,
            load=functools.partial(run.wrk_load, path=path), probe=cache_probe(path),
            title=f"wrk -t1 -c50 (cache hits, {label})",
        )
        for label, path in (("1k", "/1k"), ("100k", "/100k"))
    }
    return {
        **cache_scenarios,
        "http-gzip": run.Scenario(
            name="http-gzip",
            description=f"GET {PAGE} ({PAGE_SIZE // 1024} KiB HTML) with Accept-Encoding: gzip, "
                        f"compressed by the proxy (gzip level {LEVEL})",
            start_backend=backend,
            proxies={"haproxy": haproxy, "nginx": nginx, "pyvs": pyvs},
            load=functools.partial(run.wrk_load, headers=("Accept-Encoding: gzip",), path=PAGE),
            probe=probe,
            title="wrk -H 'Accept-Encoding: gzip' -t1 -c50",
            report=report,
        ),
    }

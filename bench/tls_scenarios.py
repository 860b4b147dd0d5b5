"""TLS benchmark scenarios for bench/run.py: ``https-small`` and ``tls-handshake``.

HAProxy, nginx and pyvs terminate TLS with the same certificate (ECDSA P-256,
self-signed, made with ``openssl req`` in the run's workspace) and the same settings:
TLS 1.2 and 1.3 with the Mozilla "intermediate" TLS 1.2 suites, session tickets on,
ALPN http/1.1; behind them the plain-HTTP nginx backend of ``http-small``. wrk (built
with OpenSSL) is the client; it does not verify the certificate, and it never resumes
a session, so every new connection is a full handshake (TLS 1.3, X25519, ECDSA).

* ``https-small`` -- as ``http-small`` over TLS: keep-alive GET /, ~100-byte body;
  requests per proxy CPU-second (target: >= 0.9 x HAProxy).
* ``tls-handshake`` -- wrk with ``Connection: close``: one new TLS connection per
  request, so the figure is handshakes per proxy CPU-second (target: >= 0.9 x
  HAProxy). Both sides spend most of it in OpenSSL's public-key operations.

This module holds no state; ``scenarios(run)`` receives bench/run.py itself.
"""

from __future__ import annotations

import subprocess
from typing import Any

# The Mozilla intermediate TLS 1.2 suites (pyvs/tls/profiles.py has the same list).
INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")


def scenarios(run: Any) -> dict[str, Any]:
    """Build the two scenarios with bench/run.py's own types and helpers."""

    def certificate(ws: Any) -> tuple[str, str, str]:
        """(cert, key, cert+key) PEM files in the workspace, made once per run."""
        cert, key, both = ws.path("tls", "cert.pem"), ws.path("tls", "key.pem"), ws.path("tls", "both.pem")
        if not both.exists():
            argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test"]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise run.BenchError(f"openssl req failed: {out.stderr.strip()}")
            both.write_bytes(cert.read_bytes() + key.read_bytes())
        return str(cert), str(key), str(both)

    def haproxy(ws: Any, listen: Any, backend: Any) -> Any:
        _, _, both = certificate(ws)
        defaults = run.HAPROXY_HTTP_DEFAULTS.replace(
            "    maxconn 4096\n",
            f"    maxconn 4096\n    ssl-default-bind-ciphers {INTERMEDIATE}\n"
            "    ssl-default-bind-options ssl-min-ver TLSv1.2\n", 1)
        cfg = ws.write("haproxy/haproxy.cfg", f"""\
{defaults}
frontend fe
    bind {listen} ssl crt {both} alpn http/1.1
    default_backend be

backend be
    server s1 {backend.endpoint}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def nginx(ws: Any, listen: Any, backend: Any) -> Any:
        cert, key, _ = certificate(ws)
        prefix = ws.path("proxy-nginx", "x").parent
        conf = ws.write("proxy-nginx/nginx.conf", f"""\
{run._nginx_proxy_head(prefix)}
    {run._nginx_upstream("be", backend.endpoint)}
    server {{
        listen {listen} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {INTERMEDIATE};
        ssl_session_tickets on;
        location / {{
            {run._nginx_proxy_pass("be")}
        }}
    }}
}}
""")
        return run.ProxyLaunch(run._nginx_argv(prefix, conf), listen)

    def pyvs(ws: Any, listen: Any, backend: Any) -> Any:
        cert, key, _ = certificate(ws)
        tls = f'    backend: be\n    tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}\n'
        return run.pyvs_launch(ws, listen, backend.endpoint, tls)

    def probe(target: Any, backend: Any) -> list[str]:
        argv = [run.CURL, "-sk", "--noproxy", "*", "--max-time", "5", "--http1.1", f"https://{target}/"]
        out = subprocess.run(argv, capture_output=True, timeout=10)
        if out.returncode != 0:
            raise run.BenchError(f"GET https://{target}/ failed: curl exit {out.returncode}")
        if out.stdout.decode(errors="replace") != run.HTTP_BODY:
            return [f"body differs from the backend's: {out.stdout[:60]!r}"]
        return []

    def wrk(target: Any, opts: Any, seconds: int, close: bool) -> Any:
        argv = [run.WRK, f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s", "--timeout", "5s",
                "--latency", *(["-H", "Connection: close"] if close else []), f"https://{target}/"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise run.BenchError("wrk did not finish in time") from None
        if out.returncode != 0:
            raise run.BenchError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
        result = run.parse_wrk(out.stdout)
        if close:
            result.work_unit = "handshakes"
        return result

    proxies = {"haproxy": haproxy, "nginx": nginx, "pyvs": pyvs}
    return {
        "https-small": run.Scenario(
            name="https-small",
            description="HTTPS keep-alive GET /, ~100-byte body (TLS 1.3, ECDSA P-256) from one nginx backend",
            start_backend=run.http_backend, proxies=proxies,
            load=lambda target, opts, seconds: wrk(target, opts, seconds, close=False),
            probe=probe, title="wrk https -t1 -c50",
        ),
        "tls-handshake": run.Scenario(
            name="tls-handshake",
            description="new TLS handshakes: wrk https with Connection: close (one full TLS 1.3 handshake "
                        "per request, no resumption)",
            start_backend=run.http_backend, proxies=proxies,
            load=lambda target, opts, seconds: wrk(target, opts, seconds, close=True),
            probe=probe, rate_label="hs/s", per_cpu_label="handshakes/CPU-s", title="wrk https Connection: close",
        ),
    }

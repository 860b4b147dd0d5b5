"""The shared-state benchmark scenario for bench/run.py: ``http-shared``.

Two workers against HAProxy with two threads (``nbthread 2``), both balancing with
least connections and sticking clients by source address (HAProxy ``stick on src``
over a ``stick-table type ip``; pyvs ``persistence: {type: source}`` over its shared
table), three servers (the http-small nginx behind three server entries). Every
request reads the instance-wide counts and looks up the shared stick table: this is
what one balancer made of several processes costs per request (issue 14). The figure
is requests per proxy CPU-second, and the table also shows the total rate.

``scenarios(run)`` receives bench/run.py itself, as bench/tcp_scenarios.py does.
"""

from __future__ import annotations

from typing import Any


def scenarios(run: Any) -> dict[str, Any]:
    def servers(backend: Any) -> list[Any]:
        # Three entries, two addresses of the one nginx (as the other HTTP scenarios use it).
        return [backend.endpoint, backend.private or backend.endpoint, backend.endpoint]

    def haproxy(ws: Any, listen: Any, backend: Any) -> Any:
        lines = "\n".join(f"    server s{i} {ep}" for i, ep in enumerate(servers(backend), 1))
        cfg = ws.write("haproxy/haproxy.cfg", f"""\
{run.HAPROXY_HTTP_DEFAULTS.replace("nbthread 1", "nbthread 2")}
frontend fe
    bind {listen}
    default_backend be

backend be
    balance leastconn
    stick-table type ip size 100k expire 30m
    stick on src
{lines}
""")
        return run.ProxyLaunch([run.HAPROXY, "-f", str(cfg), "-db"], listen)

    def pyvs(ws: Any, listen: Any, backend: Any) -> Any:
        admin = run.free_endpoint()
        entries = ", ".join(f'{{name: s{i}, address: "{ep}"}}' for i, ep in enumerate(servers(backend), 1))
        cfg = ws.write("pyvs/pyvs.yaml", f"""\
global: {{workers: 2}}
admin: {{listen: "{admin}"}}
listeners:
  - {{name: web, mode: http, bind: ["{listen}"], backend: be}}
backends:
  - name: be
    balance: leastconn
    persistence: {{type: source, timeout: 30m}}
    servers: [{entries}]
""")
        return run.ProxyLaunch([run.PYVS, "run", "-c", str(cfg)], listen, cwd=run.REPO)

    return {
        "http-shared": run.Scenario(
            name="http-shared",
            description="http-small's GETs, 2 workers vs HAProxy nbthread 2, leastconn + stick on source address",
            start_backend=run.http_backend,
            proxies={"haproxy": haproxy, "pyvs": pyvs},
            load=run.wrk_load,
            probe=run.http_probe,
        ),
    }

"""Demo backends for the embedded default config: each answers with its own name.

They run inside the supervisor's event loop, so ``pyvs run`` alone shows requests
alternating between two servers.
"""

from __future__ import annotations

import json

from aiohttp import web

from pyvs.config.schema import DemoServer, parse_address


def _app(name: str) -> web.Application:
    app = web.Application()
    count = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        if request.path == "/healthz":
            return web.Response(text="ok\n")
        body = {
            "server": name,
            "served": count,
            "method": request.method,
            "path": request.path_qs,
            "x_forwarded_for": request.headers.get("X-Forwarded-For"),
        }
        return web.Response(text=json.dumps(body) + "\n", content_type="application/json",
                            headers={"X-Served-By": name})

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class _Runners:
    def __init__(self, runners: list[web.AppRunner]) -> None:
        self.runners = runners

    async def cleanup(self) -> None:
        for r in self.runners:
            await r.cleanup()


async def start_demo_servers(servers: list[DemoServer]) -> _Runners:
    runners = []
    for s in servers:
        runner = web.AppRunner(_app(s.name), access_log=None)
        await runner.setup()
        host, port = parse_address(s.listen)
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
    return _Runners(runners)

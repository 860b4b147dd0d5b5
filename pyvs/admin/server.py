"""The admin HTTP endpoint (aiohttp, in the supervisor): JSON status for now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from pyvs.config.schema import parse_address

if TYPE_CHECKING:
    from pyvs.runtime.supervisor import Supervisor


async def start_admin(sup: Supervisor, listen: str) -> web.AppRunner:
    """Serve ``/status`` on ``listen``; returns the runner to clean up on exit."""
    app = web.Application()

    async def status(_: web.Request) -> web.Response:
        return web.json_response(sup.status(), dumps=_dumps)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="pyvs admin: GET /status (JSON), GET /metrics (Prometheus)\n")

    async def metrics(_: web.Request) -> web.Response:
        from pyvs.admin.metrics import render

        extra = sup.vrrp.metrics() if getattr(sup, "vrrp", None) is not None else ""
        return web.Response(text=render(sup.status(), extra), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_address(listen)
    await web.TCPSite(runner, host, port).start()
    return runner


def _dumps(obj: object) -> str:
    import json

    return json.dumps(obj, indent=2)

"""The admin HTTP endpoint (aiohttp, in the supervisor): JSON status, Prometheus
metrics, and ``POST /reload`` (what ``pyvs reload`` calls).

With ``admin.token_file`` set (required off loopback, see
:class:`pyvs.config.schema.AdminConfig`) every request, whatever its path, must carry
``Authorization: Bearer <token>``; anything else is answered ``401`` with
``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pyvs.config.schema import parse_address

if TYPE_CHECKING:
    from pyvs.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)


async def start_admin(sup: Supervisor, listen: str, sock: socket.socket | None = None) -> web.AppRunner:
    """Serve ``/status`` on ``listen``; returns the runner to clean up on exit.

    ``sock``, when given, is ``listen`` already bound: the supervisor binds it before
    forking any worker, so a busy admin port fails the start while nothing runs yet.

    The token (if ``admin.token_file`` is set) is read here, at start: a file that has
    become unreadable or empty since the config was loaded raises ValueError naming
    ``admin.token_file``.
    """
    token = sup.cfg.admin.token()
    if token is not None:
        _warn_if_readable_by_others(sup.cfg.admin.token_file)
    app = web.Application(middlewares=[bearer_auth(token)] if token is not None else [])

    async def status(_: web.Request) -> web.Response:
        return web.json_response(sup.status(), dumps=_dumps)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="pyvs admin: GET /status (JSON), GET /metrics (Prometheus), POST /reload\n")

    async def metrics(_: web.Request) -> web.Response:
        from pyvs.admin.metrics import render

        extra = sup.vrrp.metrics() if getattr(sup, "vrrp", None) is not None else ""
        return web.Response(text=render(sup.status(), extra), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def reload(request: web.Request) -> web.Response:
        """``POST /reload`` (optional JSON body ``{"config": "/path.yaml"}``): validate and
        apply the config; 200 with ``ok: true``, 422 with the reasons when refused."""
        path: str | None = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"ok": False, "errors": ["body: expected JSON"]}, status=400)
            if isinstance(body, dict) and body.get("config") is not None:
                path = str(body["config"])
        result = await sup.reload(path)
        return web.json_response(result, status=200 if result["ok"] else 422, dumps=_dumps)

    app.router.add_get("/status", status)
    app.router.add_post("/reload", reload)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if sock is not None:
        await web.SockSite(runner, sock).start()
    else:
        host, port = parse_address(listen)
        await web.TCPSite(runner, host, port).start()
    return runner


def bearer_auth(token: bytes) -> Middleware:
    """Middleware: pass only requests with ``Authorization: Bearer <token>``, compared in
    constant time (the comparison time does not depend on how much of the token is right)."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, cred = request.headers.get("Authorization", "").strip().partition(" ")
        given = cred.strip().encode("utf-8", "surrogateescape")
        # compare_digest first, unconditionally, so a wrong scheme costs the same time.
        ok = hmac.compare_digest(given, token)
        if not ok or scheme.lower() != "bearer":
            return web.Response(
                status=401,
                text="401 Unauthorized: send Authorization: Bearer <token from admin.token_file>\n",
                headers={"WWW-Authenticate": 'Bearer realm="pyvs admin"'},
            )
        return await handler(request)

    return auth


def _warn_if_readable_by_others(path: str | None) -> None:
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("admin.token_file %s can be read or written by every user; chmod 600 it", path)


def _dumps(obj: object) -> str:
    import json

    return json.dumps(obj, indent=2)

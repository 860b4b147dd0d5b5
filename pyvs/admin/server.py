"""The admin HTTP endpoint (aiohttp, in the supervisor): the dashboard (``GET /``), JSON
status, Prometheus metrics, ``POST /reload`` (what ``pyvs reload`` calls), and the
runtime API of :mod:`pyvs.admin.api` (described in ``pyvs/admin/openapi.yaml``).

With ``admin.token_file`` set (required off loopback, see
:class:`pyvs.config.schema.AdminConfig`) every request, whatever its path, must carry
``Authorization: Bearer <token>`` (or the dashboard's session cookie, obtained by posting
the token to ``/login``: :mod:`pyvs.admin.login`); anything else is answered ``401``
with ``WWW-Authenticate: Bearer``.
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
    runner = web.AppRunner(make_app(sup, token), access_log=None)
    await runner.setup()
    if sock is not None:
        await web.SockSite(runner, sock).start()
    else:
        host, port = parse_address(listen)
        await web.TCPSite(runner, host, port).start()
    return runner


def make_app(sup: Supervisor, token: bytes | None) -> web.Application:
    """The admin application (every route; nothing is called on ``sup`` until a request)."""
    from pyvs.admin import api

    app = web.Application(middlewares=[api.same_origin(), *([bearer_auth(token)] if token is not None else [])])

    async def status(_: web.Request) -> web.Response:
        return web.json_response(sup.status(), dumps=_dumps)

    async def index(_: web.Request) -> web.Response:
        from pyvs.admin.dashboard import page

        return web.Response(text=page(), content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def metrics(_: web.Request) -> web.Response:
        from pyvs.admin.metrics import render

        extra = sup.vrrp.metrics() if getattr(sup, "vrrp", None) is not None else ""
        return web.Response(text=render(sup.status(), extra), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def pageviews(_: web.Request) -> web.Response:
        from pyvs.logs.pageviews import status as pv_status

        return web.json_response(pv_status(sup.pageviews), dumps=_dumps)

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
        from pyvs.admin.actions import ActionError, Who

        who = Who(request.remote or "?", api.token_id(token))
        actions.record(who, f"reload {path or sup.source}", result if result["ok"] else
                       ActionError(422, "; ".join(result.get("errors", []))[:300] or "refused"))
        return web.json_response(result, status=200 if result["ok"] else 422, dumps=_dumps)

    app.router.add_get("/status", status)
    app.router.add_post("/reload", reload)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/pageviews", pageviews)  # PV/UV statistics (pyvs/logs/pageviews.py)
    app.router.add_get("/", index)

    async def signed_in(_: web.Request) -> web.Response:
        # With a token, the bearer middleware answers POST /login itself (pyvs/admin/login.py);
        # without one there is nothing to sign in to.
        return web.Response(status=303, headers={"Location": "/"})

    app.router.add_post("/login", signed_in)
    actions = api.register(app, sup, token)  # JSON views and runtime actions (pyvs/admin/api.py)
    return app


def bearer_auth(token: bytes) -> Middleware:
    """Middleware: pass only requests with ``Authorization: Bearer <token>``, compared in
    constant time (the comparison time does not depend on how much of the token is right)."""

    from pyvs.admin import login

    session = login.session_value(token)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" and request.method == "POST":  # the dashboard's sign-in form
            return await login.login(request, token, session)
        scheme, _, cred = request.headers.get("Authorization", "").strip().partition(" ")
        given = cred.strip().encode("utf-8", "surrogateescape")
        # compare_digest first, unconditionally, so a wrong scheme costs the same time.
        ok = hmac.compare_digest(given, token)
        if (not ok or scheme.lower() != "bearer") and not login.has_session(request, session):
            return login.unauthorized(request)
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

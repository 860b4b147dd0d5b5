"""The admin listener's JSON API: views of the running instance and the runtime actions.

The routes are registered here (``register``) and described, one for one, in
``pyvs/admin/openapi.yaml`` (shipped with the package and served at ``/openapi.yaml``);
``tests/integration/test_admin_api.py`` checks both directions against the live app.

Views are built from :meth:`Supervisor.status` -- the same numbers as ``/status`` and
``/metrics`` -- plus rates from :class:`~pyvs.admin.rates.RateTracker`, which the
admin server samples once a second. Actions are :class:`~pyvs.admin.actions.RuntimeActions`.

A browser on the operator's machine can reach a loopback admin port from any web
page, so a request that carries an ``Origin`` other than the admin's own is refused
(403): another site cannot make the browser drain a server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pyvs.admin.actions import ActionError, RuntimeActions, Who
from pyvs.admin.rates import RateTracker

if TYPE_CHECKING:
    from pyvs.runtime.supervisor import Supervisor

EVENT_INTERVAL = 1.0  # seconds between two dashboard events and two rate samples
RATES: web.AppKey[RateTracker] = web.AppKey("rates", RateTracker)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)


def token_id(token: bytes | None) -> str | None:
    """A short fingerprint of the admin token for the action log (never the token itself)."""
    return hashlib.sha256(token).hexdigest()[:8] if token else None


def same_origin() -> Middleware:
    """Refuse requests whose ``Origin`` is not the admin endpoint itself (see the module docstring)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and urlsplit(origin).netloc != request.host:
            return web.json_response({"ok": False, "error": f"cross-origin request from {origin} refused"},
                                     status=403)
        if origin == "null":
            return web.json_response({"ok": False, "error": "request from an opaque origin refused"}, status=403)
        return await handler(request)

    return check


# ---------------------------------------------------------------- views

def server_view(sup: Supervisor, rates: RateTracker, backend: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """One server as the API, ``pyvs ctl servers`` and the dashboard show it."""
    health = s.get("health") or {}
    cfg_weight = next((x.weight for b in sup.cfg.backends if b.name == backend["name"]
                       for x in b.servers if x.name == s["name"]), s.get("weight"))
    return {
        "name": s["name"],
        "backend": backend["name"],
        "address": s.get("address"),
        "state": s.get("state", "UP"),
        "weight": cfg_weight,
        "effective_weight": health.get("effective_weight", s.get("effective_weight")),
        "backup": bool(s.get("backup", False)),
        "active": int(s.get("active", 0)),
        "requests": int(s.get("requests", 0)),
        "responses_5xx": int(s.get("responses_5xx", 0)),
        **rates.rates(f"server.{backend['name']}/{s['name']}"),
        "latency": rates.latency(f"server.{backend['name']}/{s['name']}"),
        "checked": bool(health.get("checked", False)),
        "last_check": health.get("last_check"),
    }


def configured(sup: Supervisor, b: dict[str, Any]) -> list[dict[str, Any]]:
    """``b``'s servers as the running config has them, in its order: a server added at
    runtime shows before the new workers' first report, a removed one no longer shows
    (the counters of retired workers still name it)."""
    reported = {s["name"]: s for s in b.get("servers", [])}
    health = sup.health.statistics().get(b["name"], {})
    out = []
    for bc in sup.cfg.backends:
        if bc.name == b["name"]:
            for sc in bc.servers:
                s = reported.get(sc.name) or {"name": sc.name, "address": sc.address, "weight": sc.weight,
                                               "backup": sc.backup, "requests": 0}
                hs = health.get(sc.name)
                if hs is not None and "health" not in s:
                    s = {**s, "state": hs["state"], "health": hs}
                out.append(s)
    return out


def backend_view(sup: Supervisor, rates: RateTracker, b: dict[str, Any]) -> dict[str, Any]:
    servers = [server_view(sup, rates, b, s) for s in configured(sup, b)]
    return {
        "name": b["name"],
        "balance": b.get("balance"),
        "servers_up": sum(1 for s in servers if s["state"] == "UP"),
        "servers_total": len(servers),
        "active": sum(s["active"] for s in servers),
        # requests waiting for a server slot (servers with maxconn: pyvs/l7/queue.py), when reported
        "queued": int((b.get("queue") or {}).get("waiting_here", 0)),
        "requests": sum(s["requests"] for s in servers),
        "no_server": int(b.get("no_server", 0)),
        **rates.rates(f"backend.{b['name']}"),
        "latency": rates.latency(f"backend.{b['name']}"),
        "servers": servers,
        "stick_table": b["name"] in (sup.persist.tables if sup.persist is not None else {}),
    }


def backends_view(sup: Supervisor, rates: RateTracker, status: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    st = status if status is not None else sup.status()
    return [backend_view(sup, rates, b) for b in st["backends"]]


def listeners_view(sup: Supervisor, rates: RateTracker) -> list[dict[str, Any]]:
    """Listeners with their rates and latency (HTTP listeners; layer 4 ones count no requests)."""
    out = []
    for lc in sup.cfg.listeners:
        targets = {r.backend for _, r in lc.all_routes() if r.backend} if lc.mode == "http" else set()
        if lc.backend:
            targets.add(lc.backend)
        out.append({"name": lc.name, "mode": lc.mode, "bind": list(lc.bind), "backends": sorted(targets),
                    **rates.rates(f"listener.{lc.name}"), "latency": rates.latency(f"listener.{lc.name}")})
    return out


def summary(sup: Supervisor, rates: RateTracker) -> dict[str, Any]:
    """The dashboard's event and ``pyvs ctl status``: totals, rates, backends, VRRP, page views."""
    st = sup.status()
    out: dict[str, Any] = {
        "version": st["version"],
        "uptime": st["uptime"],
        "generation": st["generation"],
        "reloads": st["reloads"],
        "config": st["config"],
        "workers": st["workers"],
        "totals": st["totals"],
        "rates": rates.rates("total"),
        "listeners": listeners_view(sup, rates),
        "backends": backends_view(sup, rates, st),
        "vrrp": [{k: v.get(k) for k in ("name", "state", "priority", "vrid")} for v in st.get("vrrp", [])],
    }
    if "pageviews" in st:
        out["pageviews"] = st["pageviews"]
    return out


# ---------------------------------------------------------------- routes

def register(app: web.Application, sup: Supervisor, token: bytes | None) -> RuntimeActions:
    """Add the API routes to ``app`` (the admin server adds ``/``, ``/status``, ``/metrics``,
    ``/reload``); returns the actions, whose journal ``/reload`` writes to as well."""
    actions = RuntimeActions(sup)
    rates = app[RATES] = RateTracker()
    app[STOPPING] = asyncio.Event()
    tid = token_id(token)

    def who(request: web.Request) -> Who:
        return Who(request.remote or "?", tid)

    async def body(request: web.Request) -> Any:
        if not request.can_read_body:
            return {}
        try:
            return await request.json()
        except ValueError:
            raise ActionError(400, "body: expected JSON") from None

    def act(what: Callable[[web.Request], str],
            run: Callable[[web.Request], Awaitable[dict[str, Any]]], ok_status: int = 200) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                result = await run(request)
            except ActionError as exc:
                actions.record(who(request), what(request), exc)
                return web.json_response({"ok": False, "error": str(exc), "errors": exc.errors}, status=exc.status)
            actions.record(who(request), what(request), result)
            return web.json_response(result, status=ok_status)
        return handler

    def one_backend(name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [b for b in sup.status()["backends"] if b["name"] == name]
        if found:
            return found[0]
        raise web.HTTPNotFound(text=json.dumps({"ok": False, "error": f"no backend named {name!r}"}),
                               content_type="application/json")

    async def listeners(_: web.Request) -> web.Response:
        return web.json_response(listeners_view(sup, rates))

    async def backends(_: web.Request) -> web.Response:
        return web.json_response(backends_view(sup, rates))

    async def backend(request: web.Request) -> web.Response:
        return web.json_response(backend_view(sup, rates, one_backend(request.match_info["backend"])))

    async def server(request: web.Request) -> web.Response:
        b = one_backend(request.match_info["backend"])
        name = request.match_info["server"]
        for s in configured(sup, b):
            if s["name"] == name:
                return web.json_response(server_view(sup, rates, b, s))
        return web.json_response({"ok": False, "error": f"backend {b['name']!r} has no server named {name!r}"},
                                 status=404)

    async def server_action(request: web.Request) -> dict[str, Any]:
        b, s, action = (request.match_info[k] for k in ("backend", "server", "action"))
        if action == "weight":
            data = await body(request)
            weight = data.get("weight") if isinstance(data, dict) else None
            return actions.set_weight(b, s, weight)
        return actions.set_state(b, s, action)

    def describe(request: web.Request) -> str:
        mi = request.match_info
        where = "/".join(x for x in (mi.get("backend"), mi.get("server")) if x)
        return f"{request.method} {mi.get('action', '')} {where}".replace("  ", " ")

    async def add(request: web.Request) -> dict[str, Any]:
        return await actions.add_server(request.match_info["backend"], await body(request))

    async def remove(request: web.Request) -> dict[str, Any]:
        return await actions.remove_server(request.match_info["backend"], request.match_info["server"])

    async def stick_show(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "1000"))
            return web.json_response(actions.stick_show(request.match_info["backend"], max(0, limit)))
        except ValueError:
            return web.json_response({"ok": False, "error": "limit: expected an integer"}, status=400)
        except ActionError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=exc.status)

    async def stick_clear(request: web.Request) -> dict[str, Any]:
        return actions.stick_clear(request.match_info["backend"])

    async def purge(request: web.Request) -> dict[str, Any]:
        return await actions.cache_purge(request.query.get("url", ""))

    async def journal(_: web.Request) -> web.Response:
        return web.json_response(list(actions.journal))

    async def status_summary(_: web.Request) -> web.Response:
        return web.json_response(summary(sup, rates))

    async def openapi(_: web.Request) -> web.Response:
        from importlib.resources import files

        text = files("pyvs.admin").joinpath("openapi.yaml").read_text()
        return web.Response(text=text, content_type="application/yaml")

    async def events(request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: one ``summary`` document per second until the client leaves."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        stopping = app[STOPPING]
        while not stopping.is_set():
            data = json.dumps(summary(sup, rates), separators=(",", ":"))
            try:
                await resp.write(f"event: summary\ndata: {data}\n\n".encode())
            except (ConnectionError, RuntimeError):
                break
            try:
                await asyncio.wait_for(stopping.wait(), EVENT_INTERVAL)
            except TimeoutError:
                pass
        return resp

    r = app.router
    r.add_get("/api/summary", status_summary)
    r.add_get("/listeners", listeners)
    r.add_get("/backends", backends)
    r.add_get("/backends/{backend}", backend)
    r.add_post("/backends/{backend}/servers", act(lambda q: f"add server to {q.match_info['backend']}", add, 201))
    r.add_get("/backends/{backend}/servers/{server}", server)
    r.add_delete("/backends/{backend}/servers/{server}",
                 act(lambda q: f"remove server {q.match_info['backend']}/{q.match_info['server']}", remove))
    r.add_post("/backends/{backend}/servers/{server}/{action}", act(describe, server_action))
    r.add_get("/backends/{backend}/stick", stick_show)
    r.add_delete("/backends/{backend}/stick",
                 act(lambda q: f"clear stick table of {q.match_info['backend']}", stick_clear))
    r.add_post("/cache/purge", act(lambda q: f"purge {q.query.get('url', '')}", purge))
    r.add_get("/actions", journal)
    r.add_get("/openapi.yaml", openapi)
    r.add_get("/events", events)

    async def sampler() -> None:
        while True:
            rates.sample(time.monotonic(), sup.status())
            await asyncio.sleep(EVENT_INTERVAL)

    tasks: list[asyncio.Task[None]] = []

    async def on_startup(_: web.Application) -> None:
        tasks.append(asyncio.get_running_loop().create_task(sampler()))

    async def on_shutdown(_: web.Application) -> None:
        app[STOPPING].set()  # ends the event streams, so the runner need not wait for them
        for t in tasks:
            t.cancel()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return actions

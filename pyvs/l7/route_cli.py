"""``pyvs route``: show how a listener would route one request, without sending it.

The request is built as the bytes a client would send and parsed by the proxy's own
codec (:func:`pyvs.http.h1.parse_request_head`), then given to the same compiled
:class:`~pyvs.l7.router.Router` the workers use; :meth:`Router.explain` says which
vhost took it and why, which routes were tried and which condition failed first.
Nothing here can disagree with the running proxy short of a different config.

Exit status: 0 when a route matched, 2 when none did (the status pyvs would answer is
printed), 1 when the config or the request given is invalid.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import urlsplit

import click

if TYPE_CHECKING:
    from pyvs.config.schema import Config, Listener
    from pyvs.l7.filters.base import FilterExchange
    from pyvs.l7.request import RequestView
    from pyvs.l7.router import Explanation, RouteSpec

_WHY = {
    "exact": "exact name {name}",
    "wildcard": "wildcard name {name}",
    "regex": "regex name {name}",
    "default": "default vhost: no server name matches",
    "fallback": "no vhost takes this host: the listener's own routes",
    "none": "no vhost takes this host, and the listener has no routes or backend of its own",
}


def _fail(message: str) -> NoReturn:
    click.echo(f"pyvs route: {message}", err=True)
    sys.exit(1)


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _pick_listener(cfg: Config, name: str | None, port: int | None) -> Listener:
    http = [lst for lst in cfg.listeners if lst.mode == "http"]
    if name is not None:
        for lst in cfg.listeners:
            if lst.name == name:
                if lst.mode != "http":
                    _fail(f"listener {name!r} is a {lst.mode} listener: only http listeners route")
                return lst
        _fail(f"no listener named {name!r} (http listeners: {', '.join(x.name for x in http) or 'none'})")
    if not http:
        _fail("the config has no http listener")
    if port is not None:
        from pyvs.config.schema import parse_address

        for lst in http:
            if any(parse_address(b)[1] == port for b in lst.bind):
                return lst
    return http[0]


def _local_ip(listener: Listener, port: int | None, given: str | None) -> str:
    """The address the request is taken to arrive on: ``--local``, else the bind whose
    port is the URL's, else the first bind (a wildcard bind means loopback)."""
    from pyvs.config.schema import parse_address

    if given is not None:  # IP, IP:port, [IPv6] or [IPv6]:port
        host = given
        if given.startswith("[") and "]" in given:
            host = given[1 : given.index("]")]
        elif given.count(":") == 1:
            host = given.partition(":")[0]
    else:
        binds = [parse_address(b) for b in listener.bind]
        host = next((h for h, p in binds if p == port), binds[0][0])
        if host in ("0.0.0.0", "::", ""):
            host = "::1" if host == "::" else "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if given is not None:
            _fail(f"--local: expected an IP address, got {given!r}")
        return "127.0.0.1"  # a bind by name (localhost): loopback is what it means here


def _head(method: str, url: str, headers: tuple[str, ...], listener: Listener) -> tuple[bytes, str, int | None, str]:
    """The request head bytes, its Host, the URL's port (None for origin form), its scheme."""
    parts = urlsplit(url)
    port: int | None = None
    scheme = "http"
    if parts.scheme and parts.netloc:
        if parts.scheme not in ("http", "https"):
            _fail(f"URL: expected http:// or https://, got {parts.scheme}://")
        scheme = parts.scheme
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            _fail(f"URL: {exc}")
        host: str | None = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    elif url.startswith("/") or url == "*":
        host, target = None, url
    else:
        _fail(f"URL: expected an absolute URL (http://host/path) or a path starting with /, got {url!r}")
    lines = []
    for h in headers:
        name, colon, value = h.partition(":")
        if not colon or not name.strip() or name != name.strip():
            _fail(f"-H: expected 'Name: value', got {h!r}")
        if name.lower() == "host":
            host = value.strip()
        else:
            lines.append(f"{name}: {value.strip()}")
    if host is None:
        host = listener.bind[0]
    text = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{ln}\r\n" for ln in lines) + "\r\n"
    try:
        return text.encode("latin-1"), host, port, scheme
    except UnicodeEncodeError:
        _fail("the request must be ASCII (percent-encode the URL)")


def _features(spec: RouteSpec) -> dict[str, Any]:
    """The per-route features configured on the route, as plain values."""
    r = spec.config
    out: dict[str, Any] = {}
    for key in ("request_headers", "response_headers", "rewrite", "timeouts"):
        value = getattr(r, key)
        if value is not None:
            out[key] = value.model_dump(mode="json", exclude_defaults=True)
    if r.retries is not None:
        out["retries"] = r.retries
    if r.allow:
        out["allow"] = list(r.allow)
    if r.deny is not None and not r.deny.is_action:
        out["deny"] = list(r.deny.source)
    return out


def _action(spec: RouteSpec, view: RequestView) -> dict[str, Any]:
    r = spec.config
    if r.backend is not None:
        return {"type": "backend", "backend": r.backend}
    if r.redirect is not None:
        from types import SimpleNamespace

        from pyvs.l7.filters.actions import Redirect

        # The redirect filter reads only the view and the head of an exchange.
        ex = cast("FilterExchange", SimpleNamespace(view=view, head=view.head))
        location = Redirect(r.redirect.to, r.redirect.status).location(ex).decode("latin-1")
        return {"type": "redirect", "to": r.redirect.to, "status": r.redirect.status, "location": location}
    if r.respond is not None:
        return {"type": "respond", "status": r.respond.status, "body": r.respond.body}
    assert r.deny is not None
    return {"type": "deny", "status": r.deny.status}


def _backend(cfg: Config, name: str | None) -> dict[str, Any] | None:
    b = next((b for b in cfg.backends if b.name == name), None)
    if b is None:
        return None
    servers = [{"name": s.name, "address": s.address, "weight": s.weight, "backup": s.backup} for s in b.servers]
    return {"name": b.name, "balance": b.balance, "servers": servers}


def _report(cfg: Config, listener: Listener, e: Explanation, view: RequestView, request: dict[str, Any],
            access: dict[str, int]) -> dict[str, Any]:
    spec = e.route
    return {
        "listener": listener.name,
        "request": request,
        "vhost": e.vhost,
        "why": e.why,
        "server_name": e.server_name,
        "tried": [{"route": t.route.name, "where": t.route.where, "failed": t.failed} for t in e.tried],
        "route": None if spec is None else {"name": spec.name, "index": spec.index, "where": spec.where},
        "matched": list(e.matched),
        "action": None if spec is None else _action(spec, view),
        "features": {} if spec is None else _features(spec),
        "backend": None if spec is None else _backend(cfg, spec.backend),
        "access": access,
        "status": e.status,
    }


def _print_text(rep: dict[str, Any]) -> None:
    def line(label: str, text: str) -> None:
        click.echo(f"{label:<9} {text}")

    rq = rep["request"]
    line("listener", rep["listener"])
    line("request", f"{rq['method']} {rq['target']}  Host: {rq['host']}  from {rq['client']} to {rq['local']}")
    why = _WHY[rep["why"]].format(name=rep["server_name"])
    line("vhost", f"{rep['vhost']} ({why})" if rep["vhost"] else f"(none: {why})")
    for i, t in enumerate(rep["tried"]):
        line("tried" if i == 0 else "", f"{t['route']}: {t['failed']}")
    route = rep["route"]
    if route is None:
        line("result", f"no route matched: pyvs answers {_phrase(rep['status'])}")
        return
    line("route", f"{route['name']} ({route['where']})")
    line("matched", ", ".join(rep["matched"]) or "(no conditions: matches every request)")
    action = rep["action"]
    if action["type"] == "backend":
        line("action", f"backend {action['backend']}")
    elif action["type"] == "redirect":
        line("action", f"redirect {action['status']} to {action['location']} ({action['to']})")
    else:
        line("action", f"{action['type']} {_phrase(action['status'])}")
    for i, (key, value) in enumerate(rep["features"].items()):
        line("features" if i == 0 else "", f"{key}: {json.dumps(value)}")
    b = rep["backend"]
    if b is not None:
        servers = ", ".join(
            f"{s['name']} {s['address']}" + (" backup" if s["backup"] else "")
            + (f" weight {s['weight']}" if s["weight"] != 1 else "")
            for s in b["servers"]
        )
        line("backend", f"{b['name']}: {b['balance']}, {len(b['servers'])} server(s): {servers}")
    for level, status in rep["access"].items():
        if status:
            line("access", f"{level} allow/deny refuses {rep['request']['client']}: pyvs answers {_phrase(status)}")


@click.command("route")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False), help="Config file.")
@click.argument("method")
@click.argument("url")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="A request header (repeat).")
@click.option("--from", "client", default="127.0.0.1", show_default=True, help="Client IP address.")
@click.option("--local", default=None, metavar="ADDR", help="Local address the request arrives on (default: the bind).")
@click.option("--listener", "listener_name", default=None, metavar="NAME", help="Listener (default: by URL port).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def route(
    path: str, method: str, url: str, headers: tuple[str, ...], client: str, local: str | None,
    listener_name: str | None, as_json: bool,
) -> None:
    """Show how pyvs routes METHOD URL: vhost, routes tried, the route that matches.

    URL is absolute (http://www.example.com:8080/x?y=1; Host comes from it unless -H
    Host: is given) or a path (/x?y=1; Host from -H, else the listener's first bind).
    Exit 0 when a route matched, 2 when none did, 1 on a config error.
    """
    from pyvs.config.loader import ConfigError, load_file
    from pyvs.http.errors import ProtocolError
    from pyvs.http.h1 import parse_request_head
    from pyvs.l7.request import RequestView
    from pyvs.l7.router import Router

    try:
        cfg = load_file(path)
    except ConfigError as err:
        click.echo(f"{err.source}: {len(err.problems)} error(s)", err=True)
        for p in err.problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    method = method.upper()
    port = urlsplit(url).port if "://" in url else None
    listener = _pick_listener(cfg, listener_name, port)
    block, host, port, scheme = _head(method, url, headers, listener)
    try:
        head = parse_request_head(block)
    except ProtocolError as exc:
        _fail(f"the request is not valid HTTP/1.1: {exc}")
    try:
        client_ip = str(ipaddress.ip_address(client))
    except ValueError:
        _fail(f"--from: expected an IP address, got {client!r}")
    local_ip = _local_ip(listener, port, local)
    view = RequestView()
    view.reset(head)
    view.client_ip = client_ip.encode()
    view.local_ip = local_ip.encode()
    view.scheme = scheme.encode()
    router = Router.compile(listener)
    e = router.explain(view)
    access = {"listener": router.access.check(view.client_ip) if router.access else 0}
    if e.route is not None:
        access["route"] = e.route.access.check(view.client_ip) if e.route.access else 0
    request = {"method": method, "target": head.target.decode("latin-1"), "host": host, "scheme": scheme,
               "client": client_ip, "local": local_ip}
    rep = _report(cfg, listener, e, view, request, access)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        _print_text(rep)
    sys.exit(0 if e.route is not None else 2)

"""``pyvs ctl``: status, servers, drain / enable / disable / maint, weight, add / remove,
stick, reload, purge, top -- each a call of the admin API (pyvs/admin/openapi.yaml).

A server is named ``BACKEND/SERVER``, or ``SERVER`` alone when only one backend has a
server of that name. ``--json`` prints the API's answer as it is, for scripts; without
it, tables for a person. Exit codes: see :mod:`pyvs.ctl.client`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console

from pyvs.ctl import render
from pyvs.ctl.client import REFUSED, USAGE, Client, CtlError


class Ctx:
    def __init__(self, client: Client, as_json: bool) -> None:
        self.client = client
        self.as_json = as_json
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)


def _run(body: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body: CtlError -> its message on stderr and its exit code."""

    def wrapper(cctx: click.Context, /, **kwargs: Any) -> None:
        ctx: Ctx = cctx.obj
        if kwargs.pop("as_json", False):
            ctx.as_json = True
        try:
            code = body(ctx, **kwargs)
        except CtlError as exc:
            if ctx.as_json:
                click.echo(json.dumps({"ok": False, "error": str(exc), "errors": exc.details}))
            else:
                click.echo(f"pyvs ctl: {exc}", err=True)
                for d in exc.details:
                    click.echo(f"  {d}", err=True)
            sys.exit(exc.code)
        sys.exit(code or 0)

    wrapper.__doc__ = body.__doc__
    wrapper.__name__ = body.__name__  # click names the command after it
    return click.pass_context(wrapper)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")(f)


def _print(ctx: Ctx, doc: Any, human: Callable[[], Any]) -> None:
    if ctx.as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        ctx.out.print(human())


def resolve(ctx: Ctx, name: str) -> tuple[str, str]:
    """``BACKEND/SERVER`` as it is; ``SERVER`` looked up among the backends (must be unique)."""
    if "/" in name:
        backend, _, server = name.partition("/")
        return backend, server
    found = [b["name"] for b in ctx.client.call("GET", "/backends") for s in b["servers"] if s["name"] == name]
    if not found:
        raise CtlError(REFUSED, f"no server named {name!r} in any backend")
    if len(found) > 1:
        raise CtlError(USAGE, f"server {name!r} is in several backends ({', '.join(found)}): "
                              f"say which, e.g. {found[0]}/{name}")
    return found[0], name


def _path(backend: str, server: str | None = None) -> str:
    p = f"/backends/{quote(backend, safe='')}"
    return p + f"/servers/{quote(server, safe='')}" if server is not None else p


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--admin", help="Admin endpoint, e.g. http://127.0.0.1:9090 (default: $PYVS_ADMIN, else "
              "admin.listen of -c FILE or of the embedded default).")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="File holding the admin Bearer token (default: $PYVS_TOKEN_FILE, else admin.token_file of -c FILE).")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), help="Config file to read admin.* from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's answer) instead of tables.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for an answer.")
@click.pass_context
def ctl(cctx: click.Context, admin: str | None, token_file: str | None, config: str | None,
        as_json: bool, timeout: float) -> None:
    """Operate a running pyvs through its admin API. Exit status: 0 done, 1 refused by
    pyvs, 2 usage error, 3 the admin endpoint cannot be reached (or refuses the token)."""
    try:
        client = Client.create(admin, token_file, config, timeout)
    except CtlError as exc:
        click.echo(f"pyvs ctl: {exc}", err=True)
        sys.exit(exc.code)
    cctx.obj = Ctx(client, as_json)


@ctl.command()
@_json_option
@_run
def status(ctx: Ctx) -> None:
    """Version, uptime, rates, listeners and backends."""
    doc = ctx.client.call("GET", "/api/summary")
    _print(ctx, doc, lambda: render.status_view(doc))


@ctl.command()
@click.argument("backend", required=False)
@_json_option
@_run
def servers(ctx: Ctx, backend: str | None) -> None:
    """Servers of every backend (or of BACKEND): state, weight, load, last check."""
    doc = [ctx.client.call("GET", _path(backend))] if backend else ctx.client.call("GET", "/backends")
    _print(ctx, doc, lambda: render.servers_table(doc))


def _state_command(action: str, help_text: str) -> None:
    def body(ctx: Ctx, server: str) -> None:
        b, s = resolve(ctx, server)
        doc = ctx.client.call("POST", f"{_path(b, s)}/{action}")
        _print(ctx, doc, lambda: f"{b}/{s}: {doc['state']}")

    body.__doc__ = help_text
    body.__name__ = action
    ctl.command(name=action)(click.argument("server")(_json_option(_run(body))))


_state_command("drain", "Take no new requests on SERVER; requests in flight finish.")
_state_command("enable", "Put SERVER back in service (from drain or maint).")
_state_command("disable", "Put SERVER in maintenance (as HAProxy's disable server).")
_state_command("maint", "Put SERVER in maintenance.")


@ctl.command()
@click.argument("server")
@click.argument("weight", type=click.IntRange(0, 256))
@_json_option
@_run
def weight(ctx: Ctx, server: str, weight: int) -> None:
    """Set SERVER's weight (0-256) until the next reload of the config file."""
    b, s = resolve(ctx, server)
    doc = ctx.client.call("POST", f"{_path(b, s)}/weight", {"weight": weight})
    _print(ctx, doc, lambda: f"{b}/{s}: weight {doc['was']} -> {doc['weight']} ({doc['note']})")


@ctl.command()
@click.argument("backend")
@click.argument("name")
@click.argument("address")
@click.option("--weight", type=click.IntRange(0, 256), default=None)
@click.option("--backup", is_flag=True, default=False)
@_json_option
@_run
def add(ctx: Ctx, backend: str, name: str, address: str, weight: int | None, backup: bool) -> None:
    """Add server NAME at ADDRESS to BACKEND until the next reload of the config file."""
    spec: dict[str, Any] = {"name": name, "address": address}
    if weight is not None:
        spec["weight"] = weight
    if backup:
        spec["backup"] = True
    doc = ctx.client.call("POST", f"{_path(backend)}/servers", spec)
    _print(ctx, doc, lambda: f"{doc['done']} (generation {doc['generation']}; {doc['note']})")


@ctl.command()
@click.argument("server")
@_json_option
@_run
def remove(ctx: Ctx, server: str) -> None:
    """Remove SERVER until the next reload of the config file (requests in flight finish)."""
    b, s = resolve(ctx, server)
    doc = ctx.client.call("DELETE", _path(b, s))
    _print(ctx, doc, lambda: f"{doc['done']} (generation {doc['generation']}; {doc['note']})")


@ctl.command()
@click.argument("backend")
@click.option("--clear", is_flag=True, help="Empty the table instead of showing it.")
@_json_option
@_run
def stick(ctx: Ctx, backend: str, clear: bool) -> None:
    """Show (or --clear) BACKEND's stick table."""
    if clear:
        doc = ctx.client.call("DELETE", f"{_path(backend)}/stick")
        _print(ctx, doc, lambda: f"{backend}: {doc['cleared']} entries cleared")
        return
    doc = ctx.client.call("GET", f"{_path(backend)}/stick")

    def table() -> Any:
        from rich.table import Table

        t = Table(title=f"stick table {backend} ({doc['size']} entries)", title_justify="left")
        for col in ("key", "server", "expires in"):
            t.add_column(col)
        for e in doc["entries"]:
            t.add_row(e["key"], e["server"], f"{e['expires_in']:.0f} s")
        return t

    _print(ctx, doc, table)


@ctl.command()
@_json_option
@_run
def reload(ctx: Ctx) -> None:
    """Reload the config file the running pyvs was started with (validated first)."""
    doc = ctx.client.call("POST", "/reload")
    _print(ctx, doc, lambda: f"reloaded: generation {doc['generation']} running from {doc['config']}"
           + "".join(f"\nnote: {n}" for n in doc.get("notes", [])))


@ctl.command()
@click.argument("url")
@_json_option
@_run
def purge(ctx: Ctx, url: str) -> None:
    """Purge URL (host/path, or a prefix ending in *) from every worker's HTTP cache."""
    doc = ctx.client.call("POST", f"/cache/purge?url={quote(url, safe='')}")
    _print(ctx, doc, lambda: f"purged {url}")


@ctl.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--count", default=0, help="Stop after this many refreshes (0: until Ctrl-C).")
@_run
def top(ctx: Ctx, interval: float, count: int) -> None:
    """A live view: rates, backends and servers, refreshed every --interval seconds."""
    from pyvs.ctl.top import run_top

    run_top(ctx.client, ctx.out, interval, count)


@ctl.command(name="snmp-agent")
@click.option("--agentx", default="unix:/var/agentx/master", show_default=True,
              help="The master agent's AgentX socket (snmpd's agentXSocket): unix:/path or tcp:host:port.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between two reads of /status.")
@_run
def snmp_agent(ctx: Ctx, agentx: str, interval: float) -> None:
    """Serve PYVS-MIB read-only as an AgentX subagent of snmpd, until SIGTERM or Ctrl-C."""
    import asyncio
    import logging
    import signal

    from pyvs.admin.snmp import Subagent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s pyvs-snmp[%(process)d] %(levelname)s: %(message)s")

    async def fetch() -> dict[str, Any]:
        doc: dict[str, Any] = await asyncio.to_thread(ctx.client.call, "GET", "/status")
        return doc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Subagent(fetch, agentx, interval=interval).run(stop)

    try:
        asyncio.run(main())
    except ValueError as exc:  # a malformed --agentx
        raise CtlError(USAGE, str(exc)) from None

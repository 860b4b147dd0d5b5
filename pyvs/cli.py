"""Command line: ``pyvs run | check | reload | route | version | config schema | simulate``."""

from __future__ import annotations

import json
import logging
import sys

import click

from pyvs import __version__
from pyvs.config.loader import ConfigError, load_default, load_file
from pyvs.config.schema import Config
from pyvs.ctl.commands import ctl
from pyvs.l7.route_cli import route


def _load(path: str | None) -> tuple[Config, str]:
    if path is None:
        return load_default(), "<embedded default>"
    return load_file(path), path


def _report(err: ConfigError) -> None:
    click.echo(f"{err.source}: {len(err.problems)} error(s)", err=True)
    for p in err.problems:
        click.echo(f"  {p}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """pyvs: L4/L7 load balancer, reverse proxy and VRRP in one program."""


@main.command()
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False), help="Config file (YAML).")
def run(path: str | None) -> None:
    """Start pyvs (the embedded default config when no -c is given)."""
    try:
        cfg, source = _load(path)
    except ConfigError as err:
        _report(err)
        sys.exit(1)
    logging.basicConfig(
        level=cfg.global_.log_level.upper(),
        format="%(asctime)s pyvs[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from pyvs.runtime.supervisor import Supervisor

    sys.exit(Supervisor(cfg, source).run())


@main.command()
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False), help="Config file.")
def check(path: str) -> None:
    """Validate a config file: print every error with its path; exit 1 if any."""
    try:
        cfg = load_file(path)
    except ConfigError as err:
        _report(err)
        sys.exit(1)
    click.echo(
        f"{path}: OK ({len(cfg.listeners)} listener(s), {len(cfg.backends)} backend(s), "
        f"{sum(len(b.servers) for b in cfg.backends)} server(s))"
    )


@main.command()
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False), help="Config file.")
def vrrp(path: str) -> None:
    """Run only the VRRP instances of a config file (virtual IPs in front of anything)."""
    try:
        cfg = load_file(path)
    except ConfigError as err:
        _report(err)
        sys.exit(1)
    if not cfg.vrrp:
        click.echo(f"{path}: no vrrp instances to run", err=True)
        sys.exit(1)
    logging.basicConfig(
        level=cfg.global_.log_level.upper(),
        format="%(asctime)s pyvs-vrrp[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from pyvs.ha.runner import run_standalone

    sys.exit(run_standalone(cfg))


@main.command()
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False),
              help="Config file to load (default: the file the running pyvs was started with).")
@click.option("--admin", "admin", help="Admin endpoint of the running pyvs, e.g. http://127.0.0.1:9090 "
              "(default: admin.listen of -c FILE, else of the embedded default).")
@click.option("--token-file", "token_file", type=click.Path(dir_okay=False),
              help="File with the admin Bearer token (default: admin.token_file of -c FILE).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the answer.")
def reload(path: str | None, admin: str | None, token_file: str | None, timeout: float) -> None:
    """Reload a running pyvs through its admin endpoint (like SIGHUP): the config is
    validated first; a refused one leaves the running config in place. Exit status: 0
    applied, 1 refused (reasons printed), 2 the running pyvs could not be reached."""
    import os
    import urllib.error
    import urllib.request

    cfg: Config | None = None
    if path is not None:
        try:
            cfg = load_file(path)
        except ConfigError as err:
            _report(err)
            click.echo("pyvs reload: refused: the config is not valid (nothing was changed)", err=True)
            sys.exit(1)
    elif admin is None:
        cfg = load_default()
    if admin is None:
        assert cfg is not None
        if not cfg.admin.listen:
            click.echo("pyvs reload: the config has no admin.listen; give --admin URL", err=True)
            sys.exit(2)
        admin = f"http://{cfg.admin.listen}"
    if "://" not in admin:
        admin = f"http://{admin}"
    if token_file is None and cfg is not None:
        token_file = cfg.admin.token_file
    headers = {"Content-Type": "application/json"}
    if token_file:
        try:
            with open(token_file) as f:
                headers["Authorization"] = f"Bearer {f.read().strip()}"
        except OSError as exc:
            click.echo(f"pyvs reload: cannot read the token file {token_file}: {exc.strerror}", err=True)
            sys.exit(2)
    body = json.dumps({"config": os.path.abspath(path) if path else None}).encode()
    req = urllib.request.Request(admin.rstrip("/") + "/reload", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 422:
            click.echo(f"pyvs reload: {admin}: HTTP {exc.code} {exc.reason}", err=True)
            sys.exit(2)
        result = json.loads(exc.read())
    except (OSError, ValueError) as exc:
        click.echo(f"pyvs reload: cannot reach pyvs at {admin}: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(2)
    if not result.get("ok"):
        click.echo("pyvs reload: refused, the running config stays:", err=True)
        for e in result.get("errors", []):
            click.echo(f"  {e}", err=True)
        sys.exit(1)
    for note in result.get("notes", []):
        click.echo(f"pyvs reload: note: {note}", err=True)
    click.echo(f"pyvs reload: OK, generation {result.get('generation')} running from {result.get('config')}")


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"pyvs {__version__}")


@main.group()
def config() -> None:
    """Configuration helpers."""


@config.command()
def schema() -> None:
    """Print the JSON Schema of the config file (for editor completion)."""
    click.echo(json.dumps(Config.model_json_schema(by_alias=True), indent=2))


@config.command()
def default() -> None:
    """Print the embedded default config."""
    from pyvs.config.loader import default_text

    click.echo(default_text(), nl=False)


main.add_command(route)
main.add_command(ctl)  # pyvs ctl: the admin API from the command line (pyvs/ctl/)


try:
    from pyvs.simulate.command import simulate

    main.add_command(simulate)
except ImportError:  # the simulator is optional (matplotlib)
    pass


if __name__ == "__main__":
    main()

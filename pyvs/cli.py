"""Command line: ``pyvs run | check | route | version | config schema | simulate``."""

from __future__ import annotations

import json
import logging
import sys

import click

from pyvs import __version__
from pyvs.config.loader import ConfigError, load_default, load_file
from pyvs.config.schema import Config
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


try:
    from pyvs.simulate.command import simulate

    main.add_command(simulate)
except ImportError:  # the simulator is optional (matplotlib)
    pass


if __name__ == "__main__":
    main()

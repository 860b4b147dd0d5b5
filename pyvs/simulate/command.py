"""The ``pyvs simulate`` command: parse the knobs, run, print, draw.

Kept apart from the engine so that the engine can be driven from tests and
notebooks without click, and so that importing the CLI stays cheap: matplotlib is
imported only when a chart is actually written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from rich.console import Console

from pyvs.simulate.engine import AlgorithmSpec, parse_algorithm, simulate_all
from pyvs.simulate.report import describe, markdown_table, rich_table, write_chart
from pyvs.simulate.workload import (
    COST_KINDS,
    CostModel,
    Incident,
    ServerSpec,
    Workload,
    parse_fail,
    parse_slow,
    parse_speeds,
)

DEFAULT_ALGORITHMS = (
    "roundrobin,static-rr,random,weighted-random,p2c,leastconn,weighted-leastconn,sed,nq,"
    "response-time,peak-ewma,capacity,first,source,source:consistent,"
    "source:consistent:balance_factor=1.25,maglev"
)


def _split_algorithms(text: str) -> list[AlgorithmSpec]:
    """Split on commas outside parentheses: ``header(X-A),uri`` -> two specs."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    out.append("".join(cur))
    return [parse_algorithm(tok) for tok in out if tok.strip()]


def _incidents(
    specs: tuple[ServerSpec, ...], slow: tuple[str, ...], fail: tuple[str, ...], duration: float
) -> tuple[Incident, ...]:
    """The requested incidents, or the default scenario sized to the pool: the second
    server slows to a quarter of its speed at 30 % of the run, and the last one (when
    it is not also the first or second) fails at 55 % and comes back at 80 %."""
    if not slow and len(specs) >= 2:
        slow = (f"{specs[1].name}:30%:0.25",)
    if not fail and len(specs) >= 3:
        fail = (f"{specs[-1].name}:55%:80%",)
    return tuple(parse_slow(s, specs, duration) for s in slow) + tuple(parse_fail(f, specs, duration) for f in fail)


def _seconds(text: str) -> float:
    from pyvs.config.units import parse_duration

    return parse_duration(text)


@click.command("simulate")
@click.option(
    "--servers",
    default="4,2,2,1,1",
    show_default=True,
    help="Server speeds, comma separated; servers are named s1, s2, ... and each one's weight is its speed.",
)
@click.option(
    "--workers",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Parallel slots per server; more requests wait in its queue.",
)
@click.option(
    "--cost",
    "cost_kind",
    type=click.Choice(COST_KINDS),
    default="exponential",
    show_default=True,
    help="Request cost distribution. pareto is heavy-tailed: a few huge requests.",
)
@click.option(
    "--mean-cost",
    default="20ms",
    show_default=True,
    help="Mean request cost at speed 1 (a server of speed 2 serves it in half).",
)
@click.option(
    "--pareto-alpha",
    default=1.5,
    show_default=True,
    type=click.FloatRange(1.0, min_open=True),
    help="Pareto shape; closer to 1 = heavier tail.",
)
@click.option(
    "--load",
    default=0.7,
    show_default=True,
    type=click.FloatRange(0.0, 5.0, min_open=True),
    help="Arrival rate as a fraction of the pool's total nominal capacity.",
)
@click.option("--duration", default="30s", show_default=True, help="Simulated time of arrivals.")
@click.option(
    "--clients",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Distinct clients (the keys hashing algorithms see).",
)
@click.option(
    "--zipf",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0.0),
    help="Client popularity skew (0 = uniform); hot clients stress hashing.",
)
@click.option(
    "--slow",
    multiple=True,
    metavar="NAME:AT:FACTOR[:UNTIL]",
    help="The server runs at FACTOR x its speed from AT (until UNTIL); times in seconds "
    "or % of the run. Repeatable. Default: the second server, 30%:0.25.",
)
@click.option(
    "--fail",
    multiple=True,
    metavar="NAME:AT[:UNTIL]",
    help="The server dies at AT (and comes back at UNTIL). Repeatable. Default: the last server, 55%:80%.",
)
@click.option("--calm", is_flag=True, help="No incidents at all (ignores --slow and --fail).")
@click.option(
    "--detect",
    default="500ms",
    show_default=True,
    help="How long health checks take to notice a server died or came back.",
)
@click.option(
    "--slowstart", default="0s", show_default=True, help="Ramp a returning server's weight over this long (0 = off)."
)
@click.option(
    "--queue-limit",
    default=64,
    show_default=True,
    type=click.IntRange(0),
    help="Per-server queue; beyond it the server answers 503 (dropped).",
)
@click.option(
    "--algorithms",
    "-a",
    default=DEFAULT_ALGORITHMS,
    show_default=True,
    help="Comma-separated specs NAME[(ARG)][:HASH_TYPE][:OPTION=VALUE], "
    "e.g. uri:maglev or source:consistent:balance_factor=1.25.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Seed for workload and schedulers.")
@click.option(
    "--jobs",
    "-j",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Processes to run algorithms in parallel (0 = one per core).",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("pyvs-simulate"),
    show_default=True,
    help="Chart file prefix: writes PREFIX.png and PREFIX.svg.",
)
@click.option("--no-chart", is_flag=True, help="Do not draw the chart (faster).")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (for the docs).")
def simulate(
    servers: str, workers: int, cost_kind: str, mean_cost: str, pareto_alpha: float, load: float,
    duration: str, clients: int, zipf: float, slow: tuple[str, ...], fail: tuple[str, ...], calm: bool,
    detect: str, slowstart: str, queue_limit: int, algorithms: str, seed: int, jobs: int,
    chart: Path, no_chart: bool, markdown: bool,
) -> None:  # fmt: skip
    """Compare balancing algorithms on a simulated pool, in simulated time.

    Runs the real scheduler classes (the ones `pyvs run` uses) against N servers of
    different speeds, with requests arriving at a chosen fraction of the pool's
    capacity, while one server slows down and another fails and comes back. Prints,
    per algorithm, latency percentiles, the busiest and idlest server's utilisation
    and the requests dropped, and draws them as a chart (PNG and SVG).

    \b
    Examples:
      pyvs simulate
      pyvs simulate --cost pareto --load 0.8
      pyvs simulate -a roundrobin,leastconn,p2c --calm --duration 60s
      pyvs simulate -a "uri:consistent,uri:maglev,header(X-User)" --zipf 1.1
    """
    try:
        run_seconds = _seconds(duration)
        specs = parse_speeds(servers, workers)
        workload = Workload(
            servers=specs,
            cost=CostModel(cost_kind, _seconds(mean_cost), pareto_alpha),
            load=load,
            duration=run_seconds,
            clients=clients,
            zipf=zipf,
            incidents=() if calm else _incidents(specs, slow, fail, run_seconds),
            queue_limit=queue_limit,
            detect=_seconds(detect),
            slowstart=_seconds(slowstart),
            seed=seed,
        )
        algos = _split_algorithms(algorithms)
        if not algos:
            raise ValueError("no algorithm given")
        started = time.perf_counter()
        results = simulate_all(workload, algos, jobs or (os.cpu_count() or 1))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    elapsed = time.perf_counter() - started

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=130)
    if markdown:
        click.echo(describe(workload) + "\n")
        click.echo(markdown_table(results))
    else:
        console.print(rich_table(results, workload))
    total = sum(r.requests for r in results)
    console.print(f"{len(results)} algorithms, {total:,} simulated requests in {elapsed:.1f}s", style="dim")
    if not no_chart:
        paths = write_chart(results, workload, chart)
        console.print("chart: " + ", ".join(str(p) for p in paths), style="dim")

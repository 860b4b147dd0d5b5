"""Presenting simulator results: a rich table, a Markdown table and a chart.

The three views show the same numbers (latency percentiles, the busiest and the
idlest server's utilisation, dropped requests) so that the terminal, the docs page
"Choosing an algorithm" and the picture never disagree. The chart is drawn on a
bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global
backend state, no display needed, and SVG output is made reproducible (text kept as
text, no timestamp) so that regenerated docs diff cleanly.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.table import Table

from pyvs.simulate.engine import RunResult
from pyvs.simulate.workload import Workload


def describe(w: Workload) -> str:
    """One line saying what was simulated."""
    speeds = ", ".join(f"{s.name}={s.speed:g}" for s in w.servers)
    cost = f"{w.cost.kind} cost, mean {w.cost.mean * 1000:g} ms"
    if w.cost.kind == "pareto":
        cost += f", alpha {w.cost.alpha:g}"
    incidents = []
    for inc in w.incidents:
        name = w.servers[inc.server].name
        span = f"{inc.at:g}s" + (f"-{inc.until:g}s" if inc.until is not None else "")
        if inc.kind == "slow":
            incidents.append(f"{name} at {inc.factor:g}x speed {span}")
        else:
            incidents.append(f"{name} down {span}")
    text = (
        f"{len(w.servers)} servers ({speeds}; {w.servers[0].workers} workers each), {cost}, "
        f"load {w.load:.0%} = {w.rate:,.0f} req/s for {w.duration:g}s, seed {w.seed}"
    )
    if incidents:
        text += "; incidents: " + ", ".join(incidents)
    return text


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.1f}"


def _dropped(r: RunResult) -> str:
    return f"{r.dropped:,} ({r.drop_rate:.1%})" if r.dropped else "0"


HEADERS = ("algorithm", "p50 ms", "p99 ms", "p99.9 ms", "max util", "min util", "dropped")


def rows(results: list[RunResult]) -> list[tuple[str, ...]]:
    return [
        (r.label, _ms(r.p50), _ms(r.p99), _ms(r.p999), f"{r.max_util:.0%}", f"{r.min_util:.0%}", _dropped(r))
        for r in results
    ]


def rich_table(results: list[RunResult], w: Workload) -> Table:
    """The terminal view; the best p99 is green, the worst red."""
    table = Table(title="pyvs simulate", caption=describe(w), caption_justify="left", box=box.SIMPLE_HEAVY)
    for i, h in enumerate(HEADERS):
        if i == 0:
            table.add_column(h, overflow="fold")
        else:
            table.add_column(h, justify="right", no_wrap=True)
    finite = [r.p99 for r in results if not math.isnan(r.p99)]
    best, worst = (min(finite), max(finite)) if finite else (math.nan, math.nan)
    for r, row in zip(results, rows(results), strict=True):
        style = "green" if r.p99 == best else "red" if r.p99 == worst and len(results) > 1 else None
        table.add_row(*row, style=style)
    return table


def markdown_table(results: list[RunResult]) -> str:
    """The same table in GitHub Markdown, for docs/choosing-an-algorithm.md."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    lines += ["| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |" for row in rows(results)]
    return "\n".join(lines)


def _drop_note(r: RunResult) -> str:
    if not r.dropped:
        return ""
    return f"\n{r.drop_rate:.1%} dropped" if r.drop_rate >= 0.001 else f"\n{r.dropped} dropped"


def write_chart(results: list[RunResult], w: Workload, prefix: Path) -> list[Path]:
    """Latency percentiles and per-server utilisation per algorithm, as PNG and SVG."""
    import matplotlib
    from matplotlib.figure import Figure

    labels = [r.label + _drop_note(r) for r in results]
    n = len(results)
    fig = Figure(figsize=(max(8.0, 0.75 * n + 3), 9.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])

    width = 0.27
    for k, (name, attr) in enumerate((("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"))):
        values = [getattr(r, attr) * 1000 for r in results]
        top.bar([i + (k - 1) * width for i in range(n)], values, width, label=name)
    top.set_yscale("log")
    top.set_ylabel("latency (ms, log scale)")
    top.set_xticks(range(n), labels, rotation=40, ha="right", fontsize=8)
    top.set_xlim(-0.6, n - 0.4)
    top.grid(axis="y", which="both", alpha=0.3)
    top.legend(loc="upper left", ncols=3)
    top.set_title(describe(w), fontsize=8, wrap=True)

    servers = [s.name for s in w.servers]
    util = [[r.utilisation[j] * 100 for r in results] for j in range(len(servers))]
    image = bottom.imshow(util, aspect="auto", cmap="viridis", vmin=0, vmax=100)
    bottom.set_yticks(range(len(servers)), [f"{s.name} ({s.speed:g}x)" for s in w.servers])
    bottom.set_xticks(range(n), [r.label for r in results], rotation=40, ha="right", fontsize=8)
    for j in range(len(servers)):
        for i in range(n):
            value = util[j][i]
            bottom.text(i, j, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 60 else "white")  # fmt: skip
    bottom.set_title("server utilisation while up (%)", fontsize=9)
    fig.colorbar(image, ax=bottom, fraction=0.02)

    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, svg = prefix.with_suffix(".png"), prefix.with_suffix(".svg")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "pyvs"}):
        fig.savefig(png, dpi=110)
        fig.savefig(svg, metadata={"Date": None})
    return [png, svg]

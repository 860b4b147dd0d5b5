"""The simulator: parsing, determinism, incidents, reports and the click command.

Runs are small (2 simulated seconds, a few thousand requests) and seeded.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from random import Random

import pytest
from click.testing import CliRunner

from pyvs.balance.base import available
from pyvs.simulate.command import _split_algorithms, simulate
from pyvs.simulate.engine import AlgorithmSpec, RunResult, parse_algorithm, simulate_all
from pyvs.simulate.engine import simulate as run
from pyvs.simulate.report import markdown_table, rich_table, write_chart
from pyvs.simulate.workload import (
    CostModel,
    Incident,
    Workload,
    parse_fail,
    parse_slow,
    parse_speeds,
    parse_time,
    percentile,
)

SERVERS = parse_speeds("4,2,1,1")
CALM = Workload(SERVERS, duration=2.0, clients=500)
STORMY = replace(
    CALM,
    incidents=(parse_slow("s2:20%:0.25", SERVERS, 2.0), parse_fail("s4:40%:70%", SERVERS, 2.0)),
    detect=0.2,
)


def algo(token: str) -> AlgorithmSpec:
    return parse_algorithm(token)


# ---- parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("roundrobin", AlgorithmSpec("roundrobin", "roundrobin")),
        ("uri:maglev", AlgorithmSpec("uri:maglev", "uri", "maglev")),
        ("header(X-A:b)", AlgorithmSpec("header(X-A:b)", "header(X-A:b)")),
        (
            "source:consistent:balance_factor=1.25",
            AlgorithmSpec("source:consistent:balance_factor=1.25", "source", "consistent", (("balance_factor", 1.25),)),
        ),
        ("cookie(SID):consistent", AlgorithmSpec("cookie(SID):consistent", "cookie(SID)", "consistent")),
    ],
)
def test_parse_algorithm(token: str, parsed: AlgorithmSpec) -> None:
    assert parse_algorithm(token) == parsed


def test_split_algorithms_respects_parentheses() -> None:
    assert [a.spec for a in _split_algorithms("header(a,b),uri, p2c")] == ["header(a,b)", "uri", "p2c"]


def test_parse_workload_pieces() -> None:
    assert [s.speed for s in SERVERS] == [4, 2, 1, 1]
    assert [s.name for s in SERVERS] == ["s1", "s2", "s3", "s4"]
    assert parse_time("30%", 10) == pytest.approx(3.0)
    assert parse_time("1500ms", 10) == pytest.approx(1.5)
    assert parse_time("2s", 10) == 2.0
    assert parse_slow("s2:1:0.5:2", SERVERS, 10) == Incident("slow", 1, 1.0, 2.0, 0.5)
    assert parse_fail("s4:50%", SERVERS, 10) == Incident("fail", 3, 5.0)
    with pytest.raises(ValueError, match="no server"):
        parse_fail("s9:1", SERVERS, 10)
    with pytest.raises(ValueError):
        parse_slow("s1:1", SERVERS, 10)
    with pytest.raises(ValueError):
        Incident("fail", 0, 5.0, 4.0)
    with pytest.raises(ValueError):
        Workload(SERVERS, incidents=(Incident("fail", 7, 1.0),))


@pytest.mark.parametrize("kind", ["constant", "exponential", "pareto"])
def test_cost_distributions_have_the_requested_mean(kind: str) -> None:
    draw = CostModel(kind, 0.02, alpha=2.5).sampler(Random(5))
    samples = [draw() for _ in range(40000)]
    assert sum(samples) / len(samples) == pytest.approx(0.02, rel=0.05)
    if kind == "pareto":
        assert max(samples) > 10 * 0.02  # heavy tail


def test_bad_cost_models() -> None:
    with pytest.raises(ValueError):
        CostModel("uniform")
    with pytest.raises(ValueError):
        CostModel("pareto", alpha=1.0)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert math.isnan(percentile([], 50))


# ---- running -----------------------------------------------------------------------


def test_runs_are_deterministic_and_every_algorithm_sees_the_same_requests() -> None:
    first = run(STORMY, algo("p2c"))
    assert run(STORMY, algo("p2c")) == first
    results = simulate_all(STORMY, [algo(a) for a in ("roundrobin", "leastconn", "maglev")])
    assert len({r.requests for r in results}) == 1
    assert results[0].requests == pytest.approx(STORMY.rate * STORMY.duration, rel=0.1)


def test_every_registered_algorithm_runs() -> None:
    specs = [f"{n}(X-User)" if n == "header" else f"{n}(SID)" if n == "cookie" else f"{n}(id)" if n == "param"
             else n for n in available()]  # fmt: skip
    results = simulate_all(replace(STORMY, duration=1.0), [algo(s) for s in specs])
    for r in results:
        assert r.completed + r.dropped <= r.requests
        assert r.completed > 0.8 * r.requests, r.label
        assert len(r.utilisation) == len(SERVERS)


def test_calm_pool_at_moderate_load_drops_nothing() -> None:
    for token in ("roundrobin", "leastconn", "peak-ewma"):
        r = run(CALM, algo(token))
        assert r.dropped == 0
        assert r.completed == r.requests
        assert 0 < r.p50 <= r.p99 <= r.p999


def test_failure_loses_only_in_flight_requests() -> None:
    w = replace(CALM, incidents=(parse_fail("s4:40%:70%", SERVERS, 2.0),), detect=0.2)
    r = run(w, algo("roundrobin"))
    # What s4 held when it died is lost; requests refused before detection (its
    # share of 0.2 s of traffic, about 22) are retried elsewhere, not dropped.
    assert 0 < r.dropped <= SERVERS[3].workers + w.queue_limit
    assert r.dropped < 0.1 * w.rate * w.detect
    assert r.served[3] > 0  # before the failure and after the recovery


def test_backlog_aware_algorithms_avoid_the_slowed_server() -> None:
    rr = run(STORMY, algo("roundrobin"))
    for token in ("leastconn", "peak-ewma", "capacity"):
        smart = run(STORMY, algo(token))
        assert smart.served[1] < rr.served[1], token
        assert smart.p99 < rr.p99, token


def test_slow_start_ramps_the_recovered_server() -> None:
    # roundrobin follows weights (leastconn would ignore the ramp: it ignores weights).
    abrupt = run(STORMY, algo("roundrobin"))
    ramped = run(replace(STORMY, slowstart=0.3), algo("roundrobin"))
    assert 0 < ramped.served[3] < abrupt.served[3]


# ---- reporting ---------------------------------------------------------------------


def fake(label: str, p99: float, dropped: int = 0) -> RunResult:
    return RunResult(
        label, 1000, 1000 - dropped, dropped, 0.01, p99, p99 * 2, 0.012, (0.9, 0.5, 0.6, 0.7), (400, 300, 200, 100)
    )


def test_markdown_table() -> None:
    text = markdown_table([fake("roundrobin", 0.5, 12), fake("p2c", 0.1)])
    lines = text.splitlines()
    assert lines[0].startswith("| algorithm | p50 ms | p99 ms |")
    assert lines[2] == "| `roundrobin` | 10.0 | 500.0 | 1,000.0 | 90% | 50% | 12 (1.2%) |"
    assert lines[3].endswith("| 0 |")


def test_rich_table_renders() -> None:
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(rich_table([fake("roundrobin", 0.5), fake("p2c", 0.1)], CALM))
    text = console.export_text()
    assert "roundrobin" in text and "p99.9 ms" in text and "4 servers" in text


def test_chart_is_written_as_png_and_svg(tmp_path: Path) -> None:
    paths = write_chart([fake("roundrobin", 0.5, 3), fake("p2c", 0.1)], STORMY, tmp_path / "sub" / "chart")
    assert [p.name for p in paths] == ["chart.png", "chart.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "roundrobin" in svg


# ---- the command -------------------------------------------------------------------


def test_help_explains_the_knobs() -> None:
    out = CliRunner().invoke(simulate, ["--help"]).output
    for knob in ("--servers", "--cost", "--load", "--slow", "--fail", "--algorithms", "--chart", "pareto"):
        assert knob in out


def test_command_runs_and_prints_markdown() -> None:
    res = CliRunner().invoke(
        simulate,
        ["--duration", "1s", "-a", "roundrobin,p2c", "--no-chart", "--markdown", "-j", "1", "--servers", "2,1"],
    )
    assert res.exit_code == 0, res.output
    assert "| `roundrobin` |" in res.output and "| `p2c` |" in res.output
    assert "2 servers" in res.output


def test_command_writes_the_chart(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        simulate,
        ["--duration", "500ms", "-a", "leastconn", "-j", "1", "--calm", "--chart", str(tmp_path / "c")],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.png").exists() and (tmp_path / "c.svg").exists()


@pytest.mark.parametrize(
    "args",
    [["-a", "nope"], ["--servers", "fast"], ["--fail", "s9:1s"], ["--duration", "soon"], ["-a", "source:md5"]],
)
def test_command_rejects_bad_input(args: list[str]) -> None:
    res = CliRunner().invoke(simulate, [*args, "--no-chart", "--duration", "1s", "-j", "1"][: len(args) + 4])
    assert res.exit_code == 2

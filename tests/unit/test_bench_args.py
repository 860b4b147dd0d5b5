"""bench/run.py argument handling: opt-in rows run only when named."""

from __future__ import annotations

import subprocess

import pytest

import bench.run as bench


def test_direct_row_is_opt_in() -> None:
    assert bench.parse_args(["--scenario", "tcp-connrate"]).proxies == ("haproxy", "nginx", "pyvs", "pyvs-nft")
    assert bench.parse_args(["--scenario", "tcp-connrate", "--only", "direct"]).proxies == ("direct",)
    assert bench.parse_args(["--scenario", "tcp-bulk", "--only", "pyvs,direct"]).proxies == ("pyvs", "direct")


def test_http_scenario_runs_every_proxy_by_default() -> None:
    assert bench.parse_args([]).proxies == ("haproxy", "nginx", "pyvs")


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command lines the load tool would run (each run fails at once)."""
    argvs: list[list[str]] = []

    def fake_run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        argvs.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "stop here")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    return argvs


def test_browser_scenario_sends_the_browser_head(seen: list[list[str]]) -> None:
    opts = bench.parse_args(["--scenario", "http-browser"])
    assert opts.proxies == ("haproxy", "nginx", "pyvs")
    scn = bench.SCENARIOS["http-browser"]
    target = bench.Endpoint("127.0.0.1", 1)
    with pytest.raises(bench.BenchError):
        scn.load(target, bench.Options(duration=1, connections=2, threads=1, warmup=0, repeat=1,
                                       proxies=opts.proxies, keep=False), 1)
    argv = seen[0]
    assert argv[-1] == "http://127.0.0.1:1/"
    headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    assert headers == list(bench.BROWSER_HEADERS) and len(headers) == 11


def test_post_scenario_runs_the_post_script(seen: list[list[str]]) -> None:
    with pytest.raises(bench.BenchError):
        bench.SCENARIOS["http-post"].load(bench.Endpoint("127.0.0.1", 1), bench.Options(
            duration=1, connections=2, threads=1, warmup=0, repeat=1, proxies=("pyvs",), keep=False), 1)
    script = seen[0][seen[0].index("-s") + 1]
    assert script.endswith("bench/post.lua") and 'wrk.method = "POST"' in open(script).read()

"""bench/run.py argument handling: opt-in rows run only when named."""

from __future__ import annotations

import bench.run as bench


def test_direct_row_is_opt_in() -> None:
    assert bench.parse_args(["--scenario", "tcp-connrate"]).proxies == ("haproxy", "nginx", "pyvs", "pyvs-nft")
    assert bench.parse_args(["--scenario", "tcp-connrate", "--only", "direct"]).proxies == ("direct",)
    assert bench.parse_args(["--scenario", "tcp-bulk", "--only", "pyvs,direct"]).proxies == ("pyvs", "direct")


def test_http_scenario_runs_every_proxy_by_default() -> None:
    assert bench.parse_args([]).proxies == ("haproxy", "nginx", "pyvs")

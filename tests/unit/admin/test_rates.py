"""RateTracker: per-second rates from cumulative counters, with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from pyvs.admin.rates import RateTracker, counters


def status(requests: int, errors: int, a: int = 0, a5: int = 0) -> dict[str, Any]:
    return {"totals": {"requests": requests, "responses_5xx": errors},
            "backends": [{"name": "web", "servers": [{"name": "a", "requests": a, "responses_5xx": a5},
                                                     {"name": "b", "requests": 1, "responses_5xx": 0}]}]}


def test_counters_flatten_totals_backends_and_servers() -> None:
    c = counters(status(10, 2, a=7, a5=1))
    assert c["total.requests"] == 10 and c["total.5xx"] == 2
    assert c["server.web/a.requests"] == 7 and c["server.web/a.5xx"] == 1
    assert c["backend.web.requests"] == 8 and c["backend.web.5xx"] == 1


def test_no_rate_before_two_samples() -> None:
    r = RateTracker()
    assert r.rates("total") == {"req_per_s": 0.0, "errors_per_s": 0.0, "error_rate": 0.0}
    r.sample(0.0, status(0, 0))
    assert r.rate("total.requests") == 0.0


def test_rate_over_the_window_and_error_share() -> None:
    r = RateTracker(window=5.0)
    for t in range(8):
        r.sample(float(t), status(100 * t, 10 * t, a=50 * t, a5=5 * t))
    assert r.rate("total.requests") == 100.0
    assert r.rates("total")["error_rate"] == 0.1
    assert r.rates("server.web/a") == {"req_per_s": 50.0, "errors_per_s": 5.0, "error_rate": 0.1}
    assert len(r.samples) <= 7  # old samples dropped


def test_a_counter_that_goes_down_gives_no_negative_rate() -> None:
    r = RateTracker(window=5.0)
    r.sample(0.0, status(1000, 0))
    r.sample(1.0, status(1100, 0))
    r.sample(2.0, status(50, 0))  # a worker restarted: its counters start again
    assert r.rate("total.requests") >= 0.0


def test_unknown_key_is_zero() -> None:
    r = RateTracker()
    r.sample(0.0, status(1, 0))
    r.sample(1.0, status(2, 0))
    assert r.rate("backend.nope.requests") == 0.0


def traffic_status(requests: int, buckets: list[float]) -> dict[str, Any]:
    from pyvs.runtime.stats import NBUCKETS, PAIR_LEN, PAIR_SUM, reported

    pair = [0.0] * PAIR_LEN  # a worker's list, turned into the reported layout as workers do
    pair[2 * NBUCKETS : 2 * NBUCKETS + len(buckets)] = buckets  # 2xx answers
    pair[PAIR_SUM] = sum(buckets) * 0.002
    assert sum(buckets) == requests
    t = reported(pair)
    return {"totals": {}, "backends": [],
            "traffic": {"listeners": {"web": t}, "backends": {"app": t}, "servers": [["app", "a", t]]}}


def test_quantile_interpolates_inside_the_bucket() -> None:
    from pyvs.admin.rates import quantile
    from pyvs.runtime.stats import LATENCY_BOUNDS

    buckets = [0.0] * (len(LATENCY_BOUNDS) + 1)
    assert quantile(0.5, buckets) == 0.0
    buckets[2] = 100  # all in (1 ms, 2.5 ms]
    assert quantile(0.5, buckets) == pytest.approx(0.00175)
    assert quantile(1.0, buckets) == pytest.approx(0.0025)
    buckets[-1] = 1000  # most beyond the last bound: reported as the last bound
    assert quantile(0.99, buckets) == LATENCY_BOUNDS[-1]


def test_latency_over_the_window_and_listener_rates() -> None:
    r = RateTracker(window=5.0)
    r.sample(0.0, traffic_status(0, [0, 0, 0]))
    assert r.latency("listener.web")["p50_ms"] is None
    r.sample(1.0, traffic_status(100, [0, 0, 100]))
    lat = r.latency("listener.web")
    assert lat["p50_ms"] == pytest.approx(1.75) and lat["mean_ms"] == pytest.approx(2.0)
    assert r.latency("server.app/a") == lat == r.latency("backend.app")
    assert r.rates("listener.web")["req_per_s"] == 100.0
    assert r.latency("listener.nope")["p99_ms"] is None

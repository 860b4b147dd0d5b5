"""Latency-aware algorithms: response-time (EWMA) and peak-ewma."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from pyvs.balance.base import PickContext, Target, create
from pyvs.balance.latency import PeakEwma, ResponseTime


def targets(n: int = 3) -> list[Target]:
    return [Target(i, f"s{i}", 1) for i in range(n)]


def test_response_time_prefers_the_lowest_average() -> None:
    ts = targets()
    s = create("response-time", ts)
    assert isinstance(s, ResponseTime)
    for _ in range(5):
        s.observed(ts[0], 0.050, True)
        s.observed(ts[1], 0.010, True)
        s.observed(ts[2], 0.030, True)
    assert Counter(s.pick(PickContext()) for _ in range(10)) == {ts[1]: 10}
    assert s.estimate(ts[1]) == pytest.approx(0.010)


def test_response_time_ewma_moves_by_alpha() -> None:
    ts = targets(2)
    s = create("response-time", ts, alpha=0.5)
    assert isinstance(s, ResponseTime)
    s.observed(ts[0], 0.1, True)
    s.observed(ts[0], 0.3, True)
    assert s.estimate(ts[0]) == pytest.approx(0.2)
    assert s.estimate(ts[1]) is None


def test_response_time_counts_queued_work() -> None:
    # 10 ms but 4 in flight (expected 50 ms) loses to 30 ms idle.
    ts = targets(2)
    s = create("response-time", ts)
    s.observed(ts[0], 0.010, True)
    s.observed(ts[1], 0.030, True)
    for _ in range(4):
        s.taken(ts[0])
    assert s.pick(PickContext()) is ts[1]


def test_unsampled_servers_get_one_probe_at_a_time() -> None:
    ts = targets(2)
    s = create("peak-ewma", ts)
    s.observed(ts[0], 0.020, True, now=0.0)
    assert s.pick(PickContext(now=0.0)) is ts[1]  # never measured: probe it
    s.taken(ts[1])
    assert s.pick(PickContext(now=0.0)) is ts[0]  # the probe is still out


def test_errors_count_as_the_fail_penalty() -> None:
    ts = targets(2)
    s = create("response-time", ts, fail_penalty=2.0)
    s.observed(ts[0], 0.001, False)  # fails fast: must not look fast
    s.observed(ts[1], 0.300, True)
    assert s.pick(PickContext()) is ts[1]


def test_peak_ewma_jumps_to_peaks_and_decays() -> None:
    ts = targets(2)
    s = create("peak-ewma", ts, decay=10.0)
    assert isinstance(s, PeakEwma)
    s.observed(ts[0], 0.010, True, now=0.0)
    s.observed(ts[0], 0.500, True, now=1.0)  # a peak is taken at once
    assert s.estimate(ts[0]) == pytest.approx(0.5)
    s.observed(ts[0], 0.010, True, now=11.0)  # then decays with time: w = exp(-10/10)
    w = math.exp(-1.0)
    assert s.estimate(ts[0]) == pytest.approx(0.5 * w + 0.010 * (1 - w))


def test_peak_ewma_ages_idle_servers_so_they_are_retried() -> None:
    ts = targets(2)
    s = create("peak-ewma", ts, decay=1.0)
    s.observed(ts[0], 1.0, True, now=0.0)  # one bad spike
    s.observed(ts[1], 0.050, True, now=0.0)
    assert s.pick(PickContext(now=0.1)) is ts[1]
    for k in range(1, 50):  # ts[1] keeps serving at 50 ms ...
        s.observed(ts[1], 0.050, True, now=k * 0.1)
    # ... while ts[0] gets no sample; its cost ages toward zero and it is tried again.
    assert s.pick(PickContext(now=5.0)) is ts[0]


def test_peak_ewma_multiplies_by_outstanding() -> None:
    ts = targets(2)
    s = create("peak-ewma", ts)
    s.observed(ts[0], 0.010, True, now=0.0)
    s.observed(ts[1], 0.025, True, now=0.0)
    assert s.pick(PickContext(now=0.0)) is ts[0]
    for _ in range(3):
        s.taken(ts[0])  # 0.010 * 4 > 0.025 * 1
    assert s.pick(PickContext(now=0.0)) is ts[1]


def test_without_a_clock_time_stands_still() -> None:
    ts = targets(2)
    s = create("peak-ewma", ts)
    s.observed(ts[0], 0.2, True)
    s.observed(ts[0], 0.1, True)
    assert isinstance(s, PeakEwma)
    assert s.estimate(ts[0]) == pytest.approx(0.2)


@pytest.mark.parametrize(("option", "value"), [("alpha", 0.0), ("alpha", 1.5), ("fail_penalty", -1.0)])
def test_bad_options(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        create("response-time", targets(), **{option: value})  # type: ignore[arg-type]


def test_weights_scale_the_score() -> None:
    ts = [Target(0, "a", 1), Target(1, "b", 4)]
    s = create("peak-ewma", ts)
    s.observed(ts[0], 0.010, True, now=0.0)
    s.observed(ts[1], 0.030, True, now=0.0)  # slower, but weight 4: 0.0075 < 0.010
    assert s.pick(PickContext(now=0.0)) is ts[1]

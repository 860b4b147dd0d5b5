"""Agent replies and the capacity scheduler."""

from __future__ import annotations

import pytest

from pyvs.balance.base import PickContext, Target, create
from pyvs.balance.capacity import AgentReport, Capacity, parse_agent_reply


@pytest.mark.parametrize(
    ("line", "report"),
    [
        ("75%", AgentReport(percent=75)),
        ("75%\r\n", AgentReport(percent=75)),
        ("drain", AgentReport(admin="drain")),
        ("up, ready 100%", AgentReport(percent=100, state="up", admin="ready")),
        ("DOWN # disk full", AgentReport(state="down", description="disk full")),
        ("stopped", AgentReport(state="down")),
        ("maxconn:30\t50%", AgentReport(percent=50, maxconn=30)),
        ("12.6% shiny", AgentReport(percent=13, unknown=("shiny",))),
        ("", AgentReport()),
    ],
)
def test_parse_agent_reply(line: str, report: AgentReport) -> None:
    assert parse_agent_reply(line) == report


@pytest.mark.parametrize("line", ["x%", "maxconn:many", "2000%", "-5%"])
def test_parse_agent_reply_rejects_malformed_numbers(line: str) -> None:
    with pytest.raises(ValueError):
        parse_agent_reply(line)


def setup() -> tuple[Capacity, list[Target]]:
    ts = [Target(i, f"s{i}", 2) for i in range(3)]
    s = create("capacity", ts)
    assert isinstance(s, Capacity)
    return s, ts


def test_drain_and_ready() -> None:
    s, ts = setup()
    s.report(ts[0], "drain")
    assert ts[0].weight == 0 and ts[0].eligible
    assert all(s.pick(PickContext()) is not ts[0] for _ in range(10))
    s.report(ts[0], "ready")
    assert ts[0].weight == 2
    assert ts[0] in {s.pick(PickContext()) for _ in range(10)}


def test_zero_percent_drains_and_percent_is_kept_apart_from_weight() -> None:
    s, ts = setup()
    s.report(ts[1], "0%")
    assert ts[1].weight == 0
    s.report(ts[1], "40%")
    assert ts[1].weight == 2 and s.capacity(ts[1]) == 40


def test_down_and_up_go_through_the_hooks() -> None:
    s, ts = setup()
    s.report(ts[2], "down")
    assert not ts[2].eligible
    assert ts[2] not in s.pool()
    s.report(ts[2], "up 100%")
    assert ts[2].eligible and ts[2] in s.pool()


def test_maxconn_is_applied() -> None:
    s, ts = setup()
    s.report(ts[0], "maxconn:7")
    assert ts[0].maxconn == 7


def test_operator_weight_and_reported_share_combine() -> None:
    s, ts = setup()
    s.report(ts[0], "50%")
    s.weight_changed(ts[0], 8)  # 8 * 50 % = 4 against 2 * 100 % = 2
    for t in ts:
        for _ in range(3):
            s.taken(t)
    # 3 / 4 beats 3 / 2: the heavier effective weight wins.
    assert s.pick(PickContext()) is ts[0]

"""The server state machine as data: rise/fall hysteresis, admin states, ejection."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.health.state import TRANSITIONS, Event, ServerHealth, State


def test_first_failed_check_takes_an_assumed_up_server_down_at_once() -> None:
    h = ServerHealth(rise=2, fall=3)
    t = h.feed_check(False)
    assert t is not None and (t.old, t.new) == (State.UP, State.DOWN)


def test_rise_and_fall_hysteresis() -> None:
    h = ServerHealth(rise=3, fall=2)
    assert h.feed_check(True) is None  # first check: ok, stays UP
    assert h.feed_check(False) is None
    assert h.feed_check(True) is None  # a success resets the failure count
    assert h.feed_check(False) is None
    t = h.feed_check(False)
    assert t is not None and t.new is State.DOWN
    assert h.feed_check(True) is None and h.feed_check(True) is None
    t = h.feed_check(True)
    assert t is not None and t.new is State.UP


def test_admin_states_and_ejection() -> None:
    h = ServerHealth(rise=1, fall=1)
    assert h.feed(Event.DRAIN).new is State.DRAIN  # type: ignore[union-attr]
    assert not h.eligible
    assert h.feed(Event.MAINT).new is State.MAINT  # type: ignore[union-attr]
    h.feed_check(False)  # failing while in maintenance...
    assert h.state is State.MAINT
    assert h.feed(Event.READY).new is State.DOWN  # type: ignore[union-attr]  # ...is DOWN when it leaves
    h.feed_check(True)
    assert h.state is State.UP and h.eligible
    assert h.feed(Event.EJECT).new is State.DOWN  # type: ignore[union-attr]
    h.feed_check(True)
    assert h.state is State.DOWN  # still ejected: checks alone do not end an ejection
    assert h.feed(Event.UNEJECT).new is State.UP  # type: ignore[union-attr]


def test_transition_table_names_the_documented_moves() -> None:
    assert TRANSITIONS[(State.UP, Event.OP_DOWN)] == {State.DOWN}
    assert TRANSITIONS[(State.DOWN, Event.OP_UP)] == {State.UP, State.DRAIN}
    assert TRANSITIONS[(State.UP, Event.DRAIN)] == {State.DRAIN}
    assert (State.MAINT, Event.OP_DOWN) not in TRANSITIONS  # checks never leave MAINT


@settings(derandomize=True, max_examples=300)
@given(st.lists(st.one_of(st.booleans(), st.sampled_from(list(Event))), max_size=60), st.integers(1, 4),
       st.integers(1, 4))
def test_any_sequence_moves_only_along_the_table(events: list[bool | Event], rise: int, fall: int) -> None:
    h = ServerHealth(rise=rise, fall=fall)
    for ev in events:
        before = h.state
        t = h.feed_check(ev) if isinstance(ev, bool) else h.feed(ev)
        if t is None:
            assert h.state is before
        else:
            assert t.old is before and t.new is h.state
            assert t.new in TRANSITIONS[(t.old, t.event)]
        assert h.eligible == (h.state is State.UP)

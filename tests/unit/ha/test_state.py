"""The VRRP state machine with an injected clock: single steps, then whole routers."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.ha.state import (
    TRANSITIONS,
    Event,
    InvalidTransition,
    Params,
    PeerAdvert,
    ReleaseVips,
    SendAdvert,
    State,
    StateChanged,
    TakeVips,
    VrrpMachine,
    diagram,
)

A = ipaddress.IPv4Address("10.77.0.1")
B = ipaddress.IPv4Address("10.77.0.2")


def machine(priority: int = 100, interval: float = 1.0, **kw: object) -> VrrpMachine:
    return VrrpMachine(Params(vrid=51, priority=priority, advert_interval=interval, primary=A, **kw))  # type: ignore[arg-type]


def peer(priority: int, source: ipaddress.IPv4Address = B, interval: float = 1.0) -> PeerAdvert:
    return PeerAdvert(source, priority, interval)


def kinds(outputs: list[object]) -> list[type]:
    return [type(o) for o in outputs]


def test_startup_goes_backup_with_master_down_timer() -> None:
    m = machine(priority=100)
    out = m.start(10.0)
    assert m.state is State.BACKUP
    assert ReleaseVips in kinds(out)  # stale VIPs of a crashed run are removed
    assert out[-1] == StateChanged(State.INIT, State.BACKUP, Event.STARTUP, 100)
    skew = (256 - 100) * 1.0 / 256
    assert m.next_deadline() == pytest.approx(10.0 + 3 + skew)


def test_v2_skew_is_in_seconds_regardless_of_interval() -> None:
    m = machine(priority=100, interval=3.0, version=2)
    m.start(0.0)
    assert m.master_down_interval == pytest.approx(9 + 156 / 256)


def test_owner_becomes_master_at_once() -> None:
    m = machine(priority=255)
    out = m.start(0.0)
    assert m.state is State.MASTER
    assert out[:2] == [SendAdvert(255, 1.0), TakeVips()]
    assert m.next_deadline() == 1.0


def test_master_down_timer_makes_master_and_adverts_follow() -> None:
    m = machine(interval=0.1)
    m.start(0.0)
    deadline = m.next_deadline()
    assert deadline is not None
    assert m.on_timer(deadline - 0.001) == []
    out = m.on_timer(deadline)
    assert kinds(out) == [SendAdvert, TakeVips, StateChanged]
    assert m.state is State.MASTER
    sent = [m.on_timer(deadline + 0.1 * i) for i in range(1, 4)]
    assert all(s == [SendAdvert(100, 0.1)] for s in sent)


def test_backup_resets_its_timer_on_a_higher_priority_advert() -> None:
    m = machine(priority=100)
    m.start(0.0)
    assert m.receive(peer(200), 2.0) == []
    assert m.next_deadline() == pytest.approx(2.0 + m.master_down_interval)
    assert m.master == B and m.master_priority == 200


def test_preempt_ignores_a_lower_master_and_takes_over() -> None:
    m = machine(priority=200)
    m.start(0.0)
    first = m.next_deadline()
    m.receive(peer(100), 1.0)
    assert m.next_deadline() == first  # discarded: the timer was not reset
    assert m.state is State.BACKUP


def test_nopreempt_accepts_a_lower_master() -> None:
    m = machine(priority=200, preempt=False)
    m.start(0.0)
    m.receive(peer(100), 1.0)
    assert m.next_deadline() == pytest.approx(1.0 + m.master_down_interval)


def test_preempt_delay_accepts_lower_masters_only_for_a_while() -> None:
    m = machine(priority=200, preempt_delay=5.0)
    m.start(0.0)
    m.receive(peer(100), 4.0)
    assert m.next_deadline() == pytest.approx(4.0 + m.master_down_interval)
    before = m.next_deadline()
    m.receive(peer(100), 5.5)
    assert m.next_deadline() == before


def test_equal_priority_in_backup_is_accepted() -> None:
    m = machine(priority=100)
    m.start(0.0)
    m.receive(peer(100), 1.0)
    assert m.next_deadline() == pytest.approx(1.0 + m.master_down_interval)


def become_master(m: VrrpMachine) -> float:
    m.start(0.0)
    deadline = m.next_deadline()
    assert deadline is not None
    m.on_timer(deadline)
    assert m.state is State.MASTER
    return deadline


def test_master_steps_down_for_higher_priority_and_learns_its_interval() -> None:
    m = machine(priority=100, interval=1.0)
    t = become_master(m)
    out = m.receive(peer(150, interval=0.5), t + 0.2)
    assert kinds(out) == [ReleaseVips, StateChanged]
    assert m.state is State.BACKUP
    assert m.master_adver_interval == 0.5
    assert m.master_down_interval == pytest.approx(1.5 + (256 - 100) * 0.5 / 256)


def test_v2_does_not_learn_the_interval() -> None:
    m = machine(priority=100, interval=1.0, version=2)
    t = become_master(m)
    m.receive(peer(150, interval=2.0), t)
    assert m.master_adver_interval == 1.0


def test_equal_priority_is_broken_by_the_higher_primary_address() -> None:
    low = machine(priority=100)  # primary 10.77.0.1
    t = become_master(low)
    low.receive(peer(100, source=B), t)  # 10.77.0.2 is higher: it wins
    assert low.state is State.BACKUP
    high = VrrpMachine(Params(vrid=51, priority=100, advert_interval=1.0, primary=B))
    t = become_master(high)
    assert high.receive(peer(100, source=A), t) == []
    assert high.state is State.MASTER


def test_priority_zero_makes_a_backup_take_over_after_skew() -> None:
    m = machine(priority=100)
    m.start(0.0)
    m.receive(peer(200), 1.0)
    m.receive(peer(0), 1.5)
    assert m.next_deadline() == pytest.approx(1.5 + m.skew_time)
    assert m.master is None


def test_priority_zero_makes_a_master_advertise_at_once() -> None:
    m = machine()
    t = become_master(m)
    assert m.receive(peer(0), t + 0.3) == [SendAdvert(100, 1.0)]
    assert m.next_deadline() == pytest.approx(t + 1.3)


def test_shutdown_of_a_master_resigns_and_releases() -> None:
    m = machine()
    become_master(m)
    out = m.stop(9.0)
    assert out[:2] == [SendAdvert(0, 1.0), ReleaseVips()]
    assert m.state is State.INIT and m.next_deadline() is None


def test_fault_from_master_resigns_then_recovers_as_backup() -> None:
    m = machine()
    t = become_master(m)
    out = m.set_tracking(fault=True, delta=0, now=t + 1)
    assert kinds(out) == [SendAdvert, ReleaseVips, StateChanged]
    assert out[0] == SendAdvert(0, 1.0)
    assert m.state is State.FAULT and m.next_deadline() is None
    assert m.receive(peer(50), t + 2) == []
    m.set_tracking(fault=False, delta=0, now=t + 3)
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(t + 3 + m.master_down_interval)


def test_fault_before_start_starts_in_fault() -> None:
    m = machine()
    m.set_tracking(fault=True, delta=0, now=0.0)
    assert m.state is State.INIT
    m.start(0.0)
    assert m.state is State.FAULT


def test_owner_leaves_fault_straight_to_master() -> None:
    m = machine(priority=255)
    m.start(0.0)
    m.set_tracking(fault=True, delta=0, now=1.0)
    out = m.set_tracking(fault=False, delta=0, now=2.0)
    assert m.state is State.MASTER and TakeVips() in out


def test_weights_move_the_priority_within_1_254_and_a_master_advertises_it() -> None:
    m = machine(priority=100)
    t = become_master(m)
    assert m.set_tracking(fault=False, delta=-30, now=t + 0.1) == [SendAdvert(70, 1.0)]
    assert m.priority == 70
    m.set_tracking(fault=False, delta=-500, now=t + 0.2)
    assert m.priority == 1
    m.set_tracking(fault=False, delta=+500, now=t + 0.3)
    assert m.priority == 254
    owner = machine(priority=255)
    owner.set_tracking(fault=False, delta=-100, now=0.0)
    assert owner.priority == 255


def test_an_input_the_table_does_not_name_is_an_error() -> None:
    m = machine()
    with pytest.raises(InvalidTransition):
        m._fire(Event.ADVER_TIMER, 0.0)  # INIT has no advert timer


def test_params_are_validated() -> None:
    for bad in ({"vrid": 0}, {"priority": 0}, {"advert_interval": 0}, {"version": 4}, {"preempt_delay": -1}):
        kw: dict[str, object] = {"vrid": 1, "priority": 100, "advert_interval": 1.0, "primary": A, **bad}
        with pytest.raises(ValueError):
            Params(**kw)  # type: ignore[arg-type]


def test_docs_diagram_is_the_table() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "ha.md").read_text()
    block = re.search(r"```mermaid\n(stateDiagram-v2.*?)\n```", doc, re.S)
    assert block is not None, "docs/ha.md has no mermaid state diagram"
    assert block.group(1) == diagram()


# ------------------------------------------------------------ fuzzing the table

ops = st.lists(
    st.one_of(
        st.tuples(st.just("advert"), st.integers(0, 255), st.sampled_from([A, B, ipaddress.IPv4Address("10.77.0.3")])),
        st.tuples(st.just("timer"), st.floats(0, 5), st.just(A)),
        st.tuples(st.just("track"), st.integers(-300, 300), st.booleans()),
        st.tuples(st.just("stop"), st.just(0), st.just(A)),
        st.tuples(st.just("start"), st.just(0), st.just(A)),
    ),
    max_size=60,
)


@settings(max_examples=300, derandomize=True)
@given(priority=st.integers(1, 255), preempt=st.booleans(), version=st.sampled_from([2, 3]), seq=ops)
def test_random_inputs_keep_the_invariants(priority: int, preempt: bool, version: int, seq: list[tuple]) -> None:
    m = VrrpMachine(Params(vrid=1, priority=priority, advert_interval=1.0, primary=B, version=version,
                           preempt=preempt))
    now, holding, running = 0.0, False, False
    for kind, a, b in seq:
        now += 0.01
        if kind == "advert":
            out = m.receive(PeerAdvert(b, a, 1.0), now)
        elif kind == "timer":
            deadline = m.next_deadline()
            now = max(now, deadline if deadline is not None else now) + a * 0.0
            out = m.on_timer(now)
        elif kind == "track":
            out = m.set_tracking(fault=bool(b), delta=a, now=now)
        elif kind == "stop":
            out, running = m.stop(now), False
        elif not running:
            out, running = m.start(now), True
        else:
            continue
        for o in out:
            if isinstance(o, TakeVips):
                holding = True
            elif isinstance(o, ReleaseVips):
                holding = False
            elif isinstance(o, SendAdvert):
                assert o.priority == 0 or m.state is State.MASTER or o.priority == m.priority
            elif isinstance(o, StateChanged):
                assert (o.old, o.event) in TRANSITIONS
        assert holding == (m.state is State.MASTER)
        assert (m.next_deadline() is not None) == (m.state in (State.MASTER, State.BACKUP))
        assert 1 <= m.priority <= 255


# ------------------------------------------------------------ routers on a wire


class Wire:
    """Machines on one broadcast domain with zero delay: a discrete-event simulation."""

    def __init__(self, *machines: VrrpMachine) -> None:
        self.machines = list(machines)
        self.alive = set(range(len(machines)))
        self.now = 0.0
        self.connected = True
        self.log: list[tuple[float, int, StateChanged]] = []

    def deliver(self, sender: int, outputs: list[object]) -> None:
        for o in outputs:
            if isinstance(o, StateChanged):
                self.log.append((self.now, sender, o))
            if isinstance(o, SendAdvert) and sender in self.alive and self.connected:
                advert = PeerAdvert(self.machines[sender].params.primary, o.priority, o.interval)
                for i in sorted(self.alive - {sender}):
                    self.deliver(i, self.machines[i].receive(advert, self.now))

    def start(self) -> None:
        for i, m in enumerate(self.machines):
            self.deliver(i, m.start(self.now))

    def run_until(self, end: float) -> None:
        while True:
            due = [(d, i) for i in self.alive if (d := self.machines[i].next_deadline()) is not None]
            if not due or min(due)[0] > end:
                self.now = end
                return
            self.now, i = min(due)
            self.deliver(i, self.machines[i].on_timer(self.now))

    def masters(self) -> list[int]:
        return [i for i in sorted(self.alive) if self.machines[i].state is State.MASTER]


def router(priority: int, last_octet: int, interval: float = 1.0, **kw: object) -> VrrpMachine:
    primary = ipaddress.IPv4Address(f"10.77.0.{last_octet}")
    return VrrpMachine(Params(vrid=1, priority=priority, advert_interval=interval, primary=primary, **kw))  # type: ignore[arg-type]


def test_wire_elects_the_highest_priority_and_fails_over_in_master_down() -> None:
    wire = Wire(router(100, 1), router(200, 2), router(150, 3))
    wire.start()
    wire.run_until(10.0)
    assert wire.masters() == [1]
    wire.alive.discard(1)  # killed: no priority 0
    killed_at = wire.now
    wire.run_until(killed_at + 10)
    assert wire.masters() == [2]
    [(became, _, change)] = [e for e in wire.log if e[0] > killed_at]
    assert (change.old, change.new) == (State.BACKUP, State.MASTER)
    # Its master-down timer was last reset by the advert sent at killed_at - 1 + (a fraction).
    assert became - killed_at <= 3 + (256 - 150) / 256


def test_wire_split_brain_heals_to_the_higher_address_on_equal_priority() -> None:
    wire = Wire(router(100, 1), router(100, 9), router(100, 5))
    wire.connected = False
    wire.start()
    wire.run_until(10.0)
    assert wire.masters() == [0, 1, 2]  # cut apart: everyone is master
    wire.connected = True
    wire.run_until(12.0)
    assert wire.masters() == [1]  # 10.77.0.9, the highest primary address


def test_wire_resignation_hands_over_in_skew_time() -> None:
    wire = Wire(router(200, 1, interval=0.1), router(100, 2, interval=0.1))
    wire.start()
    wire.run_until(2.0)
    assert wire.masters() == [0]
    wire.deliver(0, wire.machines[0].stop(wire.now))
    wire.alive.discard(0)
    stopped = wire.now
    wire.run_until(stopped + 0.1)
    assert wire.masters() == [1]
    assert wire.machines[1].adver_at == pytest.approx(stopped + (256 - 100) * 0.1 / 256 + 0.1)


def test_wire_preempt_and_nopreempt() -> None:
    low = router(100, 1, interval=0.1)
    wire = Wire(low)
    wire.start()
    wire.run_until(1.0)
    for preempt, expected in ((True, [1]), (False, [0])):
        high = router(200, 2, interval=0.1, preempt=preempt)
        wire.machines.append(high)
        wire.alive.add(1)
        wire.deliver(1, high.start(wire.now))
        wire.run_until(wire.now + 2.0)
        assert wire.masters() == expected, f"preempt={preempt}"
        wire.deliver(1, high.stop(wire.now))
        wire.alive.discard(1)
        wire.machines.pop()
        wire.run_until(wire.now + 1.0)
        assert wire.masters() == [0]

"""The interface: spec parsing, the registry, the pool rules and the cache contract."""

from __future__ import annotations

import pytest

from pyvs.balance.base import REGISTRY, PickContext, Scheduler, Target, available, create, parse_spec

ISSUE_ALGORITHMS = {
    "roundrobin", "static-rr", "random", "weighted-random", "p2c", "leastconn",
    "weighted-leastconn", "sed", "nq", "response-time", "peak-ewma", "capacity",
    "source", "uri", "header", "cookie", "param", "maglev", "first",
}  # fmt: skip


def targets(*weights: int, backups: tuple[int, ...] = ()) -> list[Target]:
    return [Target(i, f"s{i}", w, backup=i in backups) for i, w in enumerate(weights)]


def test_every_algorithm_of_the_issue_is_registered() -> None:
    assert ISSUE_ALGORITHMS <= set(available())


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("roundrobin", ("roundrobin", "")),
        (" header(X-User) ", ("header", "X-User")),
        ("cookie( SID )", ("cookie", "SID")),
        ("uri(whole)", ("uri", "whole")),
    ],
)
def test_parse_spec(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["", "header()", "Round Robin", "x(y", "9lives"])
def test_parse_spec_rejects_malformed(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("nope", {}, "unknown balance algorithm"),
        ("roundrobin(x)", {}, "takes no argument"),
        ("header", {}, "needs an argument"),
        ("source", {"hash_type": "md5"}, "unknown hash_type"),
        ("maglev", {"table_size": 65536}, "must be prime"),
        ("source", {"balance_factor": 1.25}, "needs hash_type consistent"),
        ("uri", {"hash_type": "consistent", "table_size": 7}, "needs hash_type maglev"),
        ("roundrobin", {"table_size": 7}, "unknown option"),
        ("uri(nope)", {}, "whole"),
        ("source", {"hash_type": "consistent", "balance_factor": 0.5}, "balance_factor"),
    ],
)
def test_create_rejects(spec: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create(spec, targets(1, 1), **kwargs)  # type: ignore[arg-type]


def test_create_passes_hash_type_and_ignores_it_where_meaningless() -> None:
    s = create("source", targets(1, 1), hash_type="consistent")
    assert s.hash_type == "consistent"
    assert create("leastconn", targets(1), hash_type="consistent").pick(PickContext()) is not None


def test_targets_must_be_indexed_by_position() -> None:
    with pytest.raises(ValueError, match="index"):
        create("roundrobin", [Target(1, "a")])


def test_registered_classes_are_schedulers_with_their_name() -> None:
    available()
    for name, cls in REGISTRY.items():
        assert issubclass(cls, Scheduler)
        assert cls.name == name


def test_pool_prefers_primaries_and_falls_back_to_backups() -> None:
    ts = targets(1, 1, 1, backups=(2,))
    s = create("roundrobin", ts)
    assert [t.name for t in s.pool()] == ["s0", "s1"]
    s.server_down(ts[0])
    s.weight_changed(ts[1], 0)  # drained counts as not usable
    assert s.backup_mode
    assert [t.name for t in s.pool()] == ["s2"]
    assert s.pick(PickContext()) is ts[2]
    s.weight_changed(ts[1], 2)
    assert not s.backup_mode
    assert s.pick(PickContext()) is ts[1]
    s.server_down(ts[1])
    s.server_down(ts[2])
    assert s.pick(PickContext()) is None


def test_pool_is_cached_until_a_hook_changes_it() -> None:
    ts = targets(1, 1)
    s = create("roundrobin", ts)
    first = s.pool()
    assert s.pool() is first
    s.taken(ts[0])
    assert s.pool() is first  # traffic hooks do not invalidate
    s.server_down(ts[0])
    assert s.pool() is not first
    assert s.pool() == [ts[1]]


def test_exclude_is_honoured_unless_it_would_leave_nothing() -> None:
    ts = targets(1, 1)
    s = create("roundrobin", ts)
    for _ in range(4):
        assert s.pick(PickContext(exclude=frozenset({0}))) is ts[1]
    assert s.pick(PickContext(exclude=frozenset({0, 1}))) in ts


def test_released_never_goes_negative_and_weights_are_validated() -> None:
    ts = targets(1)
    s = create("leastconn", ts)
    s.released(ts[0])
    assert ts[0].outstanding == 0
    with pytest.raises(ValueError):
        s.weight_changed(ts[0], -1)

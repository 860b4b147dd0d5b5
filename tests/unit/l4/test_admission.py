"""pick_with_room: the scheduler decides, maxconn bounds, FULL vs no server at all."""

from __future__ import annotations

from pyvs.config.schema import Backend
from pyvs.l4.admission import FULL, pick_with_room
from pyvs.upstream.server import BackendRuntime


def backend(balance: str = "roundrobin", maxconn: tuple[int, int] = (1, 2)) -> BackendRuntime:
    cfg = Backend.model_validate({"name": "be", "balance": balance, "servers": [
        {"name": "a", "address": "127.0.0.1:1", "maxconn": maxconn[0]},
        {"name": "b", "address": "127.0.0.1:2", "maxconn": maxconn[1]},
    ]})
    return BackendRuntime(cfg, seed=1)


def take(b: BackendRuntime, ip: str = "") -> str:
    s = pick_with_room(b, ip, frozenset())
    assert s is not None and not isinstance(s, str)
    s.active += 1
    return s.name


def test_full_servers_are_skipped_until_all_are_full() -> None:
    b = backend()
    assert sorted(take(b) for _ in range(3)) == ["a", "b", "b"]
    assert pick_with_room(b, "", frozenset()) == FULL
    b.by_index[0].active -= 1  # a frees a slot
    assert take(b) == "a"


def test_no_usable_server_is_none_not_full() -> None:
    b = backend()
    for s in b.servers:
        b.scheduler.server_down(s.target)
    assert pick_with_room(b, "", frozenset()) is None


def test_source_hashing_sticks_while_there_is_room() -> None:
    b = backend("source", (0, 0))
    first = take(b, "192.0.2.1")
    assert all(take(b, "192.0.2.1") == first for _ in range(5))


def test_tried_servers_are_avoided_when_another_has_room() -> None:
    b = backend(maxconn=(0, 0))
    a = b.by_index[0]
    assert all(pick_with_room(b, "", a.index_set) is b.by_index[1] for _ in range(4))

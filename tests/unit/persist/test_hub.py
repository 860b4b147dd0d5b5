"""The supervisor's hub as data: worker messages in, worker broadcasts and store
writes out, with an injected clock and a recording store."""

from __future__ import annotations

from typing import Any

from pyvs.config.loader import load_text
from pyvs.persist.hub import StickHub
from pyvs.persist.store import LEARN, MOVE
from tests.unit.persist.rig import config

CFG = load_text(config("{type: source, timeout: 100s}"))


class RecordingStore:
    kind = "recording"

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str, str, float]] = []

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def write(self, backend: str, key: str, server: str, op: str, ttl: float) -> None:
        self.writes.append((backend, key, server, op, ttl))

    def statistics(self) -> dict[str, Any]:
        return {"kind": self.kind}


def hub() -> tuple[StickHub, list[dict[str, Any]], RecordingStore, list[float]]:
    sent: list[dict[str, Any]] = []
    store = RecordingStore()
    now = [1000.0]
    h = StickHub(CFG, sent.append, store=store, clock=lambda: now[0])
    return h, sent, store, now


def msg(*entries: tuple[str, str, str]) -> dict[str, Any]:
    return {"type": "stick", "backend": "b", "entries": [list(e) for e in entries]}


def test_only_table_backends_get_a_hub() -> None:
    assert StickHub.create(load_text(config("{type: cookie, name: S}")), lambda m: None) is None
    assert StickHub.create(CFG, lambda m: None) is not None


def test_learned_entries_are_broadcast_in_one_batch_and_stored() -> None:
    h, sent, store, _ = hub()
    h.on_worker(msg(("10.0.0.1", "s1", LEARN), ("10.0.0.2", "s2", LEARN)))
    assert sent == []  # batched until the end of the loop iteration
    h.flush()
    entries = [["10.0.0.1", "s1", 100.0], ["10.0.0.2", "s2", 100.0]]
    assert sent == [{"type": "stick", "backend": "b", "entries": entries}]
    assert [w[:4] for w in store.writes] == [("b", "10.0.0.1", "s1", LEARN), ("b", "10.0.0.2", "s2", LEARN)]
    assert h.statistics()["tables"]["b"]["entries"] == 2 and h.learned == 2


def test_first_learn_wins_between_workers() -> None:
    h, sent, store, now = hub()
    h.on_worker(msg(("k", "s1", LEARN)))
    now[0] += 10
    h.on_worker(msg(("k", "s2", LEARN)))  # another worker balanced the same client meanwhile
    h.flush()
    assert sent[0]["entries"] == [["k", "s1", 100.0], ["k", "s1", 90.0]]  # the correction
    assert h.conflicts == 1 and len(store.writes) == 1


def test_move_overrides_and_refresh_extends() -> None:
    h, _, store, now = hub()
    h.on_worker(msg(("k", "s1", LEARN)))
    h.on_worker(msg(("k", "s2", MOVE)))
    now[0] += 90
    h.on_worker(msg(("k", "s2", LEARN)))  # a refresh from a worker that keeps using it
    now[0] += 50
    assert h.tables["b"].get("k", now[0]).value == "s2"  # type: ignore[union-attr]
    assert [w[3] for w in store.writes] == [LEARN, MOVE, LEARN]


def test_snapshot_for_a_new_worker_and_expiry() -> None:
    h, _, _, now = hub()
    h.on_worker(msg(("a", "s1", LEARN)))
    now[0] += 60
    h.on_worker(msg(("b", "s2", LEARN)))
    assert h.snapshot() == [{"type": "stick", "backend": "b", "entries": [["a", "s1", 40.0], ["b", "s2", 100.0]]}]
    now[0] += 50
    assert h.snapshot()[0]["entries"] == [["b", "s2", 50.0]]


def test_remote_entries_reach_the_workers() -> None:
    h, sent, _, _ = hub()
    h.on_remote("b", [("k", "s3", 30.0), ("dead", "s1", 0.0)])
    h.on_remote("nope", [("k", "s3", 30.0)])
    h.flush()
    assert sent == [{"type": "stick", "backend": "b", "entries": [["k", "s3", 30.0]]}]
    h.on_remote("b", [("k", "s3", 30.0)])  # nothing new: no broadcast
    h.flush()
    assert len(sent) == 1
    assert list(h.local_entries()) == [("b", "k", "s3", 30.0)]


def test_malformed_and_unknown_messages_are_ignored() -> None:
    h, sent, store, _ = hub()
    h.on_worker({"type": "stick", "backend": "b", "entries": [["k"]]})
    h.on_worker({"type": "stick", "backend": "other", "entries": [["k", "s1", LEARN]]})
    h.on_worker(msg(("k", "s1", "bogus")))
    h.flush()
    assert sent == [] and store.writes == []

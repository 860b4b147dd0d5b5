"""nftables rule building (pure) and the data plane's transactions, over a recording runner."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from pyvs.l4.nftables import (
    HASH_SLOTS,
    KernelServer,
    NftDataPlane,
    NftError,
    NftPlan,
    NftRunner,
    dispatch_rules,
    normalise,
    pool,
    slot_table,
    smooth_order,
    table_ruleset,
)

SERVERS = (KernelServer("a", "10.78.2.11", 8080, 3), KernelServer("b", "10.78.2.12", 8080, 1),
           KernelServer("spare", "10.78.2.13", 8080, 1, backup=True))


def plan(algorithm: str = "inc", consistent: bool = False, protocol: str = "tcp") -> NftPlan:
    return NftPlan("pyvs_web", protocol, (("10.78.1.1", 80),), SERVERS, algorithm, consistent)


class Recorder(NftRunner):
    """Keeps every transaction instead of running nft; answers counter listings."""

    def __init__(self, counters: dict[str, tuple[int, int]] | None = None, fail: str = "") -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.counters = counters or {}
        self.fail = fail

    def run(self, args: Sequence[str], stdin: str | None = None) -> str:
        self.calls.append(list(args))
        if self.fail:
            raise NftError(self.fail)
        if stdin is not None:
            self.batches.append(json.loads(stdin)["nftables"])
        if "counters" in args:
            return json.dumps({"nftables": [{"metainfo": {}}] + [
                {"counter": {"family": "ip", "table": "pyvs_web", "name": n, "packets": p, "bytes": b}}
                for n, (p, b) in self.counters.items()]})
        return ""


def vmap(rules: list[list[dict[str, Any]]]) -> dict[str, Any]:
    v: dict[str, Any] = rules[0][0]["vmap"]
    return v


def owners(v: dict[str, Any]) -> list[str]:
    """Expand the vmap back into one chain name per numgen / jhash value."""
    out: list[str] = []
    for key, verdict in v["data"]["set"]:
        lo, hi = (key["range"] if isinstance(key, dict) else (key, key))
        out += [verdict["goto"]["target"]] * (hi - lo + 1)
    return out


def test_pool_follows_the_scheduler_rule() -> None:
    assert pool(SERVERS, {"a": 3, "b": 1, "spare": 1}) == [(0, 3), (1, 1)]
    assert pool(SERVERS, {"spare": 1, "a": 0}) == [(2, 1)]  # no primary: the backups
    assert pool(SERVERS, {}) == []


def test_weights_normalise_by_gcd_and_stay_bounded() -> None:
    assert normalise([(0, 768), (1, 256)]) == [(0, 3), (1, 1)]  # health's x256 scale
    big = normalise([(0, 5000), (1, 3)], limit=100)
    assert sum(w for _, w in big) <= 101 and big[1][1] >= 1


def test_round_robin_is_smooth_and_weighted() -> None:
    assert smooth_order([(0, 3), (1, 1)]) == [0, 0, 1, 0]  # a a b a: never three in a row
    v = vmap(dispatch_rules(plan(), {"a": 3, "b": 1}))
    assert v["key"] == {"numgen": {"mode": "inc", "mod": 4, "offset": 0}}
    assert owners(v) == ["srv0", "srv0", "srv1", "srv0"]


def test_random_uses_ranges() -> None:
    v = vmap(dispatch_rules(plan("random"), {"a": 3, "b": 1}))
    assert v["key"]["numgen"]["mode"] == "random"
    assert v["data"]["set"] == [[{"range": [0, 2]}, {"goto": {"target": "srv0"}}], [3, {"goto": {"target": "srv1"}}]]


def test_source_hash_map_mode() -> None:
    v = vmap(dispatch_rules(plan("jhash"), {"a": 3, "b": 1}))
    assert v["key"]["jhash"]["mod"] == 4
    assert v["key"]["jhash"]["expr"] == {"payload": {"protocol": "ip", "field": "saddr"}}


def test_consistent_source_hash_moves_only_the_leaving_servers_slots() -> None:
    names = ["a", "b", "c"]
    before = slot_table([(0, 1), (1, 1), (2, 1)], names)
    after = slot_table([(0, 1), (2, 1)], names)  # b leaves
    moved = [i for i in range(HASH_SLOTS) if before[i] != after[i]]
    assert moved and all(before[i] == 1 for i in moved)
    shares = Counter(before)
    assert all(abs(shares[k] - HASH_SLOTS / 3) < HASH_SLOTS * 0.08 for k in range(3))
    weighted = Counter(slot_table([(0, 3), (1, 1)], names))
    assert 2.4 < weighted[0] / weighted[1] < 3.8
    v = vmap(dispatch_rules(plan("jhash", consistent=True), {"a": 1, "b": 1}))
    assert v["key"]["jhash"]["mod"] == HASH_SLOTS


@pytest.mark.parametrize(("protocol", "reject"),
                         [("tcp", {"reject": {"type": "tcp reset"}}), ("udp", {"reject": None})])
def test_empty_pool_rejects_and_counts(protocol: str, reject: dict[str, Any]) -> None:
    assert dispatch_rules(plan(protocol=protocol), {}) == [[{"counter": "no_server"}, reject]]


def test_table_ruleset_replaces_atomically_and_owns_only_its_table() -> None:
    cmds = table_ruleset(plan(), {"a": 3, "b": 1})
    ref = {"family": "ip", "name": "pyvs_web"}
    assert cmds[:3] == [{"add": {"table": ref}}, {"delete": {"table": ref}}, {"add": {"table": ref}}]
    for c in cmds:
        ((_, obj),) = c.items()
        ((kind, body),) = obj.items()
        assert (body["name"] if kind == "table" else body["table"]) == "pyvs_web"  # never another table
    kinds = [(next(iter(c["add"])), c["add"][next(iter(c["add"]))].get("name") or c["add"]["rule"]["chain"])
             for c in cmds if "add" in c]
    # the server chains exist before the dispatch rule that jumps to them
    assert kinds.index(("chain", "srv1")) < kinds.index(("rule", "dispatch"))
    text = json.dumps(cmds)
    assert '"masquerade": null' in text and '"dnat": {"addr": "10.78.2.11", "port": 8080}' in text


def test_no_masquerade_when_servers_route_back() -> None:
    p = NftPlan("t", "tcp", (("10.0.0.1", 80),), SERVERS, "inc", masquerade=False)
    assert "masquerade" not in json.dumps(table_ruleset(p, {"a": 1}))


def test_plan_validates() -> None:
    with pytest.raises(ValueError):
        NftPlan("t", "sctp", (("10.0.0.1", 80),), SERVERS, "inc")
    with pytest.raises(ValueError):
        NftPlan("t", "tcp", (), SERVERS, "inc")


def test_set_servers_rewrites_only_dispatch_and_only_on_change() -> None:
    r = Recorder()
    plane = NftDataPlane("web", "be", plan(), r)
    plane.start()
    assert len(r.batches) == 1
    plane.set_servers({"a": 3, "b": 1, "spare": 1})  # what it already has
    assert len(r.batches) == 1
    plane.set_servers({"a": 768, "b": 256, "spare": 256})  # same proportions (health's scale)
    assert len(r.batches) == 1
    plane.set_servers({"a": 3})  # b is down
    update = r.batches[-1]
    assert update[0] == {"flush": {"chain": {"family": "ip", "table": "pyvs_web", "name": "dispatch"}}}
    assert all("rule" in c["add"] and c["add"]["rule"]["chain"] == "dispatch" for c in update[1:])
    assert owners(update[1]["add"]["rule"]["expr"][0]["vmap"]) == ["srv0"]


def test_statistics_read_the_named_counters() -> None:
    r = Recorder({"conn0": (7, 420), "up0": (9, 1000), "down0": (8, 5000), "conn1": (2, 1), "no_server": (1, 60)})
    plane = NftDataPlane("web", "be", plan(), r)
    st = plane.statistics()
    assert st["no_server"] == 1
    assert st["servers"][0] == {"name": "a", "address": "10.78.2.11:8080", "weight": 3, "connections": 7,
                                "bytes_to_server": 1000, "bytes_from_server": 5000}
    assert st["servers"][2]["connections"] == 0


def test_stop_tolerates_a_table_already_gone() -> None:
    NftDataPlane("web", "be", plan(), Recorder(fail="Error: No such file or directory")).stop()
    with pytest.raises(NftError):
        NftDataPlane("web", "be", plan(), Recorder(fail="Operation not permitted")).stop()

"""HyperLogLog: estimates within its error, merges as a union, keeps no addresses."""

from __future__ import annotations

import random

from pyvs.logs.hll import HyperLogLog, M


def _ips(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [b"10.%d.%d.%d" % (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(n)]


def test_empty_counts_zero_and_repeats_count_once() -> None:
    h = HyperLogLog()
    assert h.count() == 0
    for _ in range(1000):
        h.add(b"192.0.2.1")
    assert h.count() == 1


def test_estimate_is_within_a_few_percent() -> None:
    for n in (100, 5000, 50000):
        values = {f"client-{i}".encode() for i in range(n)}
        h = HyperLogLog()
        for v in values:
            h.add(v)
        assert abs(h.count() - n) <= max(2, 0.05 * n), (n, h.count())


def test_changes_merge_into_the_union_of_two_workers() -> None:
    a, b, union, store = HyperLogLog(), HyperLogLog(), HyperLogLog(), HyperLogLog()
    ips_a, ips_b = _ips(3000, 1), _ips(3000, 2) + _ips(1000, 1)  # overlapping
    for ip in ips_a:
        a.add(ip)
        union.add(ip)
    for ip in ips_b:
        b.add(ip)
        union.add(ip)
    # as shipped: JSON turns register numbers into strings
    store.merge_changes({str(k): v for k, v in a.take_changes().items()})
    store.merge_changes(b.take_changes())
    assert store.registers == union.registers
    assert a.take_changes() == {}  # taken: the next report carries only new growth


def test_registers_are_all_it_holds() -> None:
    h = HyperLogLog()
    h.add(b"203.0.113.9")
    assert set(HyperLogLog.__slots__) == {"changed", "registers"}
    assert len(h.registers) == M and b"203.0.113.9" not in bytes(h.registers)

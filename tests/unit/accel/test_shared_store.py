"""The store all workers share (pyvs/accel/shared_store.py): two stores over one zone
and one directory stand for two workers; each test names the behaviour it checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyvs.accel.cache import Entry
from pyvs.accel.shared_store import SharedStore, adopt, decode, encode, sweep_roots
from pyvs.shared.state import C_BYTES, C_KEYS
from tests.unit.accel.sharedkit import shared_area, shared_stores

T0 = 1_800_000_000.0


def entry(body: bytes = b"x" * 100, vary: tuple[tuple[bytes, bytes | None], ...] = (),
          fields: bytes = b"Content-Type: text/plain\r\n") -> Entry:
    return Entry(200, fields, body, vary, request_time=T0, response_time=T0, date=T0, age_value=0.0, lifetime=60.0)


@pytest.fixture(params=["c", "python"])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> list[SharedStore]:
    return shared_stores(tmp_path, 2, implementation=request.param)


def test_a_store_in_one_worker_is_a_hit_in_the_other(two: list[SharedStore]) -> None:
    a, b = two
    assert b.variants(b"example.com /logo.gif") is None
    a.put(b"example.com /logo.gif", entry(b"logo"))
    got = b.variants(b"example.com /logo.gif")
    assert got is not None and got[0].body == b"logo" and got[0].lifetime == 60.0
    assert b.stamps  # b now has its own copy


def test_an_invalidation_in_one_worker_drops_the_others_copy(two: list[SharedStore]) -> None:
    a, b = two
    a.put(b"k /x", entry())
    assert b.variants(b"k /x") is not None  # b's local copy
    assert a.invalidate(b"k /x") == 1
    assert b.variants(b"k /x") is None
    assert a.statistics()["entries"] == 0 and a.statistics()["bytes"] == 0


def test_a_replacement_reaches_a_worker_holding_the_old_copy(two: list[SharedStore]) -> None:
    a, b = two
    a.put(b"k /x", entry(b"old"))
    assert b.variants(b"k /x")[0].body == b"old"  # type: ignore[index]
    a.put(b"k /x", entry(b"new"))
    assert b.variants(b"k /x")[0].body == b"new"  # type: ignore[index]
    assert a.statistics()["entries"] == 1


def test_an_unchanged_copy_is_served_without_reading_the_file(two: list[SharedStore], monkeypatch:
                                                              pytest.MonkeyPatch) -> None:
    a, b = two
    a.put(b"k /x", entry())
    assert b.variants(b"k /x") is not None

    def no_reads(*args: object, **kw: object) -> None:
        raise AssertionError("a current local copy must not touch the file")

    monkeypatch.setattr("builtins.open", no_reads)
    monkeypatch.setattr(os, "stat", no_reads)
    assert b.variants(b"k /x") is not None


def test_variants_stored_by_two_workers_live_side_by_side(two: list[SharedStore]) -> None:
    a, b = two
    gz = ((b"accept-encoding", b"gzip"),)
    br = ((b"accept-encoding", b"br"),)
    a.put(b"k /x", entry(b"gzip body", gz))
    b.put(b"k /x", entry(b"br body", br))
    got = a.variants(b"k /x")
    assert got is not None and sorted(v.body for v in got) == [b"br body", b"gzip body"]
    b.put(b"k /x", entry(b"br body 2", br))  # the variant with the same Vary values is replaced
    got = a.variants(b"k /x")
    assert got is not None and sorted(v.body for v in got) == [b"br body 2", b"gzip body"]


def test_purge_by_prefix_reaches_every_worker(two: list[SharedStore]) -> None:
    a, b = two
    for t in (b"/img/1", b"/img/2", b"/css/1"):
        a.put(b"example.com " + t, entry())
        assert b.variants(b"example.com " + t) is not None
    assert b.purge(b"example.com /img/") == 2
    assert a.variants(b"example.com /img/1") is None and b.variants(b"example.com /img/2") is None
    assert a.variants(b"example.com /css/1") is not None
    assert a.statistics()["entries"] == 1


def test_total_bytes_stay_bounded_and_the_least_recently_used_go(tmp_path: Path) -> None:
    a, b = shared_stores(tmp_path, 2, size=4 * 1400, max_object=2000, local=0)
    for i in range(3):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
        os.utime(a._path(hash(b"k /%d" % i) & ((1 << 64) - 1)), ns=(i * 10**9, i * 10**9))  # distinct ages
    assert b.variants(b"k /0") is not None  # a hit in the other worker makes /0 recent
    b.flush_touches()
    for i in range(3, 6):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
    st = a.statistics()
    assert st["bytes"] <= 4 * 1400 and st["evictions"] >= 1
    assert b.variants(b"k /0") is not None  # used recently: kept
    assert b.variants(b"k /1") is None  # least recently used: evicted first
    assert a.variants(b"k /5") is not None  # the newest


def test_local_copies_are_bounded_by_local(tmp_path: Path) -> None:
    (a,) = shared_stores(tmp_path, 1, local=3 * 1400)
    for i in range(10):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
    assert a.bytes <= 3 * 1400 and len(a.keys) <= 3
    assert a.variants(b"k /0") is not None  # still in the shared store: read again


def test_counts_follow_the_files_and_adopt_recounts(tmp_path: Path) -> None:
    area, zone = shared_area(tmp_path)
    a = SharedStore(area, zone.words, size=100_000, max_object=10_000, local=100_000)
    a.put(b"k /1", entry())
    a.put(b"k /2", entry())
    size = sum(p.stat().st_size for p in Path(area.directory).iterdir())
    assert zone.words.get(C_BYTES) == size and zone.words.get(C_KEYS) == 2
    _, zone2 = shared_area(tmp_path)  # a reload: a new zone over the same directory
    adopt(area, zone2.words)
    assert zone2.words.get(C_BYTES) == size and zone2.words.get(C_KEYS) == 2


def test_a_foreign_or_torn_file_is_a_miss(two: list[SharedStore]) -> None:
    a, b = two
    a.put(b"k /x", entry())
    path = a._path(hash(b"k /x") & ((1 << 64) - 1))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])  # in place (pyvs never does): bump its counter as a writer would
    b.words.add(b.base + (hash(b"k /x") & ((1 << 64) - 1)) % 64, 1)
    assert b.variants(b"k /x") is None
    Path(path).write_bytes(b"not a cache file")
    assert decode(b"not a cache file") is None and b.variants(b"k /x") is None


def test_two_keys_with_one_file_name_never_answer_for_each_other(two: list[SharedStore],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    monkeypatch.setattr(SharedStore, "_path", lambda self, h: f"{self.directory}/same")
    a.put(b"k /one", entry(b"one"))
    assert b.variants(b"k /two") is None
    b.put(b"k /two", entry(b"two"))  # replaces /one's file
    assert a.variants(b"k /one") is None or a.variants(b"k /one")[0].body == b"one"  # type: ignore[index]
    assert b.variants(b"k /two")[0].body == b"two"  # type: ignore[index]


def test_encode_decode_round_trip() -> None:
    e = entry(b"\x00\xffbody", ((b"accept-encoding", None),))
    key, (back,) = decode(encode(b"h /t", [e]))  # type: ignore[misc]
    assert key == b"h /t" and back.body == e.body and back.vary == e.vary and back.fields == e.fields
    assert (back.request_time, back.response_time, back.date, back.lifetime) == (T0, T0, T0, 60.0)


def test_roots_of_dead_instances_are_swept(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        gone_pid = 2**22 + 12345  # above the default pid_max: never a live process
        for pid in (gone_pid, proc.pid, os.getpid()):
            (tmp_path / f"pyvs-cache-{pid}" / "s").mkdir(parents=True)
        (tmp_path / "unrelated").mkdir()
        sweep_roots({str(tmp_path)}, os.getpid())
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["unrelated", f"pyvs-cache-{proc.pid}", f"pyvs-cache-{os.getpid()}"])
        sweep_roots({str(tmp_path)}, os.getpid(), remove_own=True)
        assert not (tmp_path / f"pyvs-cache-{os.getpid()}").exists()
    finally:
        proc.kill()
        proc.wait()


def test_one_fetch_per_key_for_the_instance(two: list[SharedStore]) -> None:
    a, b = two
    assert a.claim_fetch(b"k /x") and not b.claim_fetch(b"k /x")
    assert b.fetching_elsewhere(b"k /x") and b.claim_fetch(b"k /other")
    a.release_fetch(b"k /x")
    assert not b.fetching_elsewhere(b"k /x") and b.claim_fetch(b"k /x")


def test_a_store_that_cannot_write_says_so_once_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = shared_stores(tmp_path, 1)
    Path(a.directory).parent.mkdir(parents=True)
    Path(a.directory).write_text("a file where the directory should be")
    for i in range(3):
        a.put(b"k /%d" % i, entry())
    assert a.variants(b"k /0") is None and a.statistics()["store_errors"] == 3
    assert len([r for r in caplog.records if "cannot store" in r.getMessage()]) == 1

"""The store all workers share (pyvs/accel/shared_store.py): two stores over one zone
and one directory stand for two workers; each test names the behaviour it checks."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pyvs.accel.cache import Entry
from pyvs.accel.cache_files import C_BYTES, C_KEYS, decode, encode, open_section, purge_files, sweep_roots
from pyvs.accel.shared_store import SharedStore
from pyvs.config.accel_schema import Cache
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
    assert purge_files(a.area, b"example.com /img/", True) == 2  # the supervisor's part
    assert purge_files(a.area, b"example.com /css/", False) == 0  # exact: no such key
    assert a.variants(b"example.com /img/1") is None and b.variants(b"example.com /img/2") is None
    assert a.variants(b"example.com /css/1") is not None
    assert a.statistics()["entries"] == 1


def test_total_bytes_stay_bounded_and_the_least_recently_used_go(tmp_path: Path) -> None:
    a, b = shared_stores(tmp_path, 2, size=4 * 4096, max_object=2000, local=0)
    for i in range(3):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
        os.utime(a._path(hash(b"k /%d" % i) & ((1 << 64) - 1)), ns=(i * 10**9, i * 10**9))  # distinct ages
    assert b.variants(b"k /0") is not None  # a hit in the other worker makes /0 recent
    b.flush_touches()
    for i in range(3, 6):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
    st = a.statistics()
    assert st["bytes"] <= 4 * 4096 and st["evictions"] >= 1  # counted in pages, as tmpfs charges
    assert b.variants(b"k /0") is not None  # used recently: kept
    assert b.variants(b"k /1") is None  # least recently used: evicted first
    assert a.variants(b"k /5") is not None  # the newest


def test_local_copies_are_bounded_by_local(tmp_path: Path) -> None:
    (a,) = shared_stores(tmp_path, 1, local=3 * 1400)
    for i in range(10):
        a.put(b"k /%d" % i, entry(b"y" * 1000))
    assert a.bytes <= 3 * 1400 and len(a.keys) <= 3
    assert a.variants(b"k /0") is not None  # still in the shared store: read again


def test_counts_follow_the_files_and_a_reload_keeps_them(tmp_path: Path) -> None:
    area = shared_area(tmp_path)
    a = SharedStore(area, size=100_000, max_object=10_000, local=100_000)
    a.put(b"k /1", entry())
    a.put(b"k /2", entry())
    pages = sum(p.stat().st_blocks * 512 for p in Path(area.directory).iterdir() if not p.name.startswith("."))
    assert area.zone.words.get(C_BYTES) == pages and area.zone.words.get(C_KEYS) == 2
    again = shared_area(tmp_path)  # a reload: the same section, mapped anew by the next generation
    assert again.directory == area.directory and again.zone.words.get(C_KEYS) == 2
    b = SharedStore(again, size=100_000, max_object=10_000, local=100_000)
    assert b.variants(b"k /1") is not None
    b.invalidate(b"k /1")  # a change by the new generation reaches a copy of the old one
    assert a.variants(b"k /1") is None and area.zone.words.get(C_KEYS) == 1


def test_a_foreign_or_torn_file_is_a_miss(two: list[SharedStore]) -> None:
    a, b = two
    a.put(b"k /x", entry())
    path = a._path(hash(b"k /x") & ((1 << 64) - 1))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])  # in place (pyvs never does): bump its counter as a writer would
    b.words.add((hash(b"k /x") & ((1 << 64) - 1)) % 64, 1)
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
        gone_pid = 2**22 + 12345  # above the largest pid_max: never a live process
        for pid in (gone_pid, proc.pid, os.getpid()):
            (tmp_path / f"pyvs-cache-{pid}" / "s").mkdir(parents=True)
        (tmp_path / "unrelated").mkdir()
        sweep_roots({str(tmp_path)}, os.getpid())  # at start: a root with our own pid is a previous life's
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["unrelated", f"pyvs-cache-{proc.pid}"])
    finally:
        proc.kill()
        proc.wait()


def test_a_root_someone_else_made_is_refused(tmp_path: Path) -> None:
    """The root's name is predictable: one made beforehand by another user (or with
    another mode) must not be used, or they could plant objects."""
    (tmp_path / "pyvs-cache-1").mkdir(mode=0o777)
    os.chmod(tmp_path / "pyvs-cache-1", 0o777)
    with pytest.raises(ValueError, match="not this instance's own"):
        open_section("web", Cache(path=str(tmp_path)), 1, None)


def test_one_fetch_per_key_for_the_instance(two: list[SharedStore]) -> None:
    a, b = two
    assert a.claim_fetch(b"k /x") and not b.claim_fetch(b"k /x")
    assert b.fetching_elsewhere(b"k /x") and b.claim_fetch(b"k /other")
    a.release_fetch(b"k /x")
    assert not b.fetching_elsewhere(b"k /x") and b.claim_fetch(b"k /x")


def test_a_store_that_cannot_write_says_so_once_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = shared_stores(tmp_path, 1)
    Path(a.directory, ".zone").unlink()  # (its mapping stays)
    Path(a.directory).rmdir()
    Path(a.directory).write_text("a file where the directory should be")
    for i in range(3):
        a.put(b"k /%d" % i, entry())
    assert a.variants(b"k /0") is None and a.statistics()["store_errors"] == 3
    assert len([r for r in caplog.records if "cannot store" in r.getMessage()]) == 1


def test_a_fetch_claim_of_a_dead_worker_is_taken_over(two: list[SharedStore]) -> None:
    """A worker killed while fetching leaves its claim: others must not wait for it
    (nor keep it alive by trying to claim it)."""
    a, b = two
    dead = 2**22 + 77  # above the largest pid_max: never a live process
    w, base, tag = a.words, a.area.fetches.base, (hash(b"k /x") & ((1 << 63) - 1)) or 1
    assert w.table_claim(base, tag, dead << 32, int(time.monotonic() * 1e6), 5_000_000, -1) == dead << 32
    assert not b.fetching_elsewhere(b"k /x")
    assert b.claim_fetch(b"k /x") and not a.claim_fetch(b"k /x")


def test_a_reload_that_changes_the_workers_user_gets_a_section_of_its_own(tmp_path: Path) -> None:
    """The root stays the supervisor's; each user's sections are that user's."""
    from pyvs.runtime.privileges import Identity

    section = Cache(path=str(tmp_path))
    nobody = open_section("web", section, 1, Identity("nobody", 65534, 65534))
    mine = open_section("web", section, 1, None)
    assert nobody.directory != mine.directory
    assert Path(nobody.directory).stat().st_uid == 65534 and Path(mine.directory).stat().st_uid == os.geteuid()
    assert (tmp_path / "pyvs-cache-1").stat().st_mode & 0o777 == 0o711


def test_a_planted_zone_file_is_refused(tmp_path: Path) -> None:
    """The section directory is the workers': a hard link planted as .zone must not
    be opened (and truncated) by the supervisor."""
    area = open_section("web", Cache(path=str(tmp_path)), 1, None)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.unlink(f"{area.directory}/.zone")
    os.link(victim, f"{area.directory}/.zone")
    with pytest.raises(ValueError, match="not a file this instance made"):
        open_section("web", Cache(path=str(tmp_path)), 1, None)
    assert victim.read_bytes() == b"precious"  # neither resized nor written

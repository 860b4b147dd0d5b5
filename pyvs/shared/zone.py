"""The shared memory itself: one memfd, mapped MAP_SHARED by the supervisor before it
forks the workers, so every process of a worker generation sees the same words.

Theory of operation
-------------------
nginx gives its workers shared state through ``zone`` directives: a region of shared
memory created by the master before the fork, updated with atomics and a mutex.
pyvs does the same. A :class:`Zone` is a number of int64 *words*; what each word
means is decided once, by :mod:`pyvs.shared.state`, from the config. Two
implementations share one interface (:class:`Words`):

* :class:`pyvs.shared._zone.Zone` (C): atomic add and compare-and-swap, and hash
  tables under a spinlock whose holder's pid is in the lock word (a waiter takes over
  the lock of a process that died holding it);
* :class:`pyvs.shared.pyzone.PyZone` (pure Python): the same layout and algorithms
  under ``fcntl`` byte-range locks (the kernel drops the locks of a dead process).

``PYVS_SHARED=python`` in the environment selects the pure-Python one (the tests
run both). Times are integers (microseconds of CLOCK_MONOTONIC, which every process
of the host reads alike); tags are positive 63-bit keyed hashes of the keys, never
the keys themselves.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
from typing import Protocol

from pyvs.shared.pyzone import HEADER, SLOT, PyZone

try:
    from pyvs.shared._zone import Zone as CZone
except ImportError:  # no C compiler where pyvs was installed: same behaviour, slower
    CZone = None  # type: ignore[assignment,misc]

TAG_MASK = (1 << 63) - 1
_TAG_KEY = b"pyvs-shared-tag"


class Words(Protocol):
    """What both implementations offer (see pyvs/shared/_zone.c for the contract)."""

    def add(self, i: int, d: int, /) -> int: ...
    def get(self, i: int, /) -> int: ...
    def set(self, i: int, v: int, /) -> None: ...
    def cas(self, i: int, old: int, new: int, /) -> bool: ...
    def table_get(self, base: int, tag: int, now: int, ttl: int, /) -> int: ...
    def table_claim(self, base: int, tag: int, value: int, now: int, ttl: int, expect: int, /) -> int: ...
    def table_del(self, base: int, tag: int, /) -> bool: ...
    def table_sweep(self, base: int, now: int, limit: int, /) -> int: ...
    def gcra(self, base: int, tag: int, now: int, interval: int, tau: int, /) -> int: ...
    def count_add(self, base: int, tag: int, owner: int, owners: int, delta: int, limit: int, now: int,
                  ttl: int, /) -> int: ...
    def drop_owner(self, base: int, owner: int, /) -> int: ...


def tag_of(key: str) -> int:
    """A key's tag: a positive 63-bit keyed hash, never 0 (0 marks an empty slot).
    The same in every process (Python's ``hash`` is not, across interpreters)."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, key=_TAG_KEY).digest(), "little")
    return (h & TAG_MASK) or 1


def table_words(capacity: int) -> int:
    """Words taken by a table of ``capacity`` slots (a power of two)."""
    return HEADER + SLOT * capacity


def table_capacity(max_entries: int) -> int:
    """Slots for a table bounded at ``max_entries``: a power of two, at most half full."""
    cap = 8
    while cap < 2 * max_entries:
        cap *= 2
    return cap


class Zone:
    """``nwords`` int64 words of shared memory and the implementation that updates them.

    ``path``: the words live in that file instead of a memfd (created zeroed when it
    does not exist; ``self.created`` says so), so that every process mapping the file
    shares them, whichever generation forked it (the cache's, pyvs/accel/shared_store.py)."""

    def __init__(self, nwords: int, *, implementation: str | None = None, path: str | None = None) -> None:
        size = max(nwords, 1) * 8
        self.created = True
        if path is None:
            self.fd = os.memfd_create("pyvs-zone", os.MFD_CLOEXEC)
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            st = os.fstat(self.fd)
            # Made by this process, linked nowhere else: never resize a file planted there.
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                os.close(self.fd)
                raise ValueError(f"{path} is not a file this instance made")
            self.created = st.st_size < size
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.nwords = nwords
        impl = implementation or os.environ.get("PYVS_SHARED", "c")
        self.words: Words
        if impl == "c" and CZone is not None:
            self.words = CZone(self.map)
            self.implementation = "c"
        else:
            self.words = PyZone(self.map, self.fd)
            self.implementation = "python"

    def close(self) -> None:
        """Give the memfd back (the supervisor, once no worker of the generation is
        left; a worker, for the zones of other generations it inherited). The mapping
        goes with the last reference to the words."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def init_table(self, base: int, capacity: int, max_entries: int) -> None:
        """Write a table header (before the workers fork)."""
        m = memoryview(self.map).cast("q")
        try:
            m[base + 3] = capacity
            m[base + 4] = max_entries
        finally:
            m.release()

    def table_stats(self, base: int) -> tuple[int, int]:
        """(entries, evictions) of the table at ``base``."""
        return self.words.get(base + 1), self.words.get(base + 2)

"""The pure-Python twin of :mod:`pyvs.shared._zone` (used where the C helper was not
built, and by the tests to check both behave the same).

Same layout, same algorithms, same results. Where the C code uses an atomic
instruction or a spinlock, this takes an exclusive ``fcntl`` byte-range lock on the
zone's memfd over the word concerned: the kernel serialises the processes, and
releases the lock of a process that dies holding it. It is slower (two system calls
per operation) but exact.
"""

from __future__ import annotations

import fcntl
import mmap
import os

H_LOCK, H_COUNT, H_EVICT, H_CAP, H_MAX, H_CURSOR = range(6)
HEADER = 8
SLOT = 3
_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
INT64_MAX = (1 << 63) - 1


class _Locked:
    """``with`` an exclusive lock on one word of the zone file."""

    __slots__ = ("fd", "off")

    def __init__(self, fd: int, word: int) -> None:
        self.fd = fd
        self.off = word * 8

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 8, self.off, os.SEEK_SET)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 8, self.off, os.SEEK_SET)


class PyZone:
    """Words and tables over ``buf`` (a shared mmap of the memfd ``fd``)."""

    def __init__(self, buf: mmap.mmap, fd: int) -> None:
        self.w = memoryview(buf).cast("q")
        self.n = len(self.w)
        self.fd = fd

    def _check(self, i: int, span: int = 1) -> None:
        if i < 0 or i + span > self.n:
            raise IndexError(f"word {i} outside the zone")

    # ------------------------------------------------------------ plain words
    def add(self, i: int, d: int) -> int:
        self._check(i)
        with _Locked(self.fd, i):
            v = self.w[i] + d
            self.w[i] = v
        return v

    def get(self, i: int) -> int:
        self._check(i)
        return int(self.w[i])

    def set(self, i: int, v: int) -> None:
        self._check(i)
        self.w[i] = v

    def cas(self, i: int, old: int, new: int) -> bool:
        self._check(i)
        with _Locked(self.fd, i):
            if self.w[i] != old:
                return False
            self.w[i] = new
            return True

    # ------------------------------------------------------------------ tables
    def _table(self, base: int) -> tuple[int, int]:
        self._check(base, HEADER)
        cap = self.w[base + H_CAP]
        if cap <= 0 or cap & (cap - 1):
            raise ValueError(f"no table at word {base}")
        self._check(base, HEADER + SLOT * cap)
        return base + HEADER, cap - 1

    def _find(self, s: int, mask: int, tag: int) -> tuple[int, bool]:
        w = self.w
        i = tag & mask
        while True:
            x = w[s + i * SLOT]
            if x == tag:
                return i, True
            if x == 0:
                return i, False
            i = (i + 1) & mask

    def _remove(self, base: int, s: int, mask: int, i: int) -> None:
        w = self.w
        j = i
        while True:
            j = (j + 1) & mask
            sj = s + j * SLOT
            if w[sj] == 0:
                break
            k = w[sj] & mask
            stays = (i < k <= j) if i <= j else (i < k or k <= j)
            if stays:
                continue
            si = s + i * SLOT
            w[si], w[si + 1], w[si + 2] = w[sj], w[sj + 1], w[sj + 2]
            i = j
        si = s + i * SLOT
        w[si] = w[si + 1] = w[si + 2] = 0
        w[base + H_COUNT] -= 1

    def _evict_one(self, base: int, s: int, mask: int, tag: int) -> None:
        w = self.w
        i = ((tag & _U64) * _GOLDEN & _U64) & mask
        best_exp = INT64_MAX
        best = 0
        seen = 0
        n = 0
        while n <= mask and seen < 8:
            si = s + i * SLOT
            if w[si] != 0:
                seen += 1
                if w[si + 2] < best_exp:
                    best_exp, best = w[si + 2], i
            n += 1
            i = (i + 1) & mask
        if seen:
            self._remove(base, s, mask, best)
            w[base + H_EVICT] += 1

    def _insert(self, base: int, s: int, mask: int, tag: int, value: int, expires: int) -> None:
        w = self.w
        if w[base + H_COUNT] >= w[base + H_MAX]:
            self._evict_one(base, s, mask, tag)
        i, found = self._find(s, mask, tag)
        si = s + i * SLOT
        if not found:
            w[base + H_COUNT] += 1
        w[si], w[si + 1], w[si + 2] = tag, value, expires

    def table_get(self, base: int, tag: int, now: int, ttl: int) -> int:
        s, mask = self._table(base)
        w = self.w
        with _Locked(self.fd, base + H_LOCK):
            i, found = self._find(s, mask, tag)
            if not found:
                return -1
            si = s + i * SLOT
            if w[si + 2] > now:
                if ttl > 0 and now + ttl > w[si + 2]:
                    w[si + 2] = now + ttl
                return int(w[si + 1])
            self._remove(base, s, mask, i)
            return -1

    def table_claim(self, base: int, tag: int, value: int, now: int, ttl: int, expect: int) -> int:
        s, mask = self._table(base)
        w = self.w
        with _Locked(self.fd, base + H_LOCK):
            i, found = self._find(s, mask, tag)
            si = s + i * SLOT
            if found and w[si + 2] > now:
                out = value
                if expect == -2 or (expect >= 0 and w[si + 1] == expect):
                    w[si + 1] = value
                else:
                    out = int(w[si + 1])
                w[si + 2] = now + ttl
                return out
            if found:
                w[si + 1] = value
                w[si + 2] = now + ttl
            else:
                self._insert(base, s, mask, tag, value, now + ttl)
            return value

    def table_del(self, base: int, tag: int) -> bool:
        s, mask = self._table(base)
        with _Locked(self.fd, base + H_LOCK):
            i, found = self._find(s, mask, tag)
            if found:
                self._remove(base, s, mask, i)
            return found

    def table_sweep(self, base: int, now: int, limit: int) -> int:
        s, mask = self._table(base)
        w = self.w
        removed = 0
        with _Locked(self.fd, base + H_LOCK):
            i = w[base + H_CURSOR] & mask
            for _ in range(limit):
                si = s + i * SLOT
                if w[si] != 0 and w[si + 2] <= now:
                    self._remove(base, s, mask, i)
                    removed += 1
                    continue
                i = (i + 1) & mask
            w[base + H_CURSOR] = i
        return removed

    def gcra(self, base: int, tag: int, now: int, interval: int, tau: int) -> int:
        s, mask = self._table(base)
        w = self.w
        with _Locked(self.fd, base + H_LOCK):
            i, found = self._find(s, mask, tag)
            si = s + i * SLOT
            tat = int(w[si + 1]) if found else now
            tat = max(tat, now)
            if tat - now > tau:
                return tat - now - tau
            if found:
                w[si + 1] = w[si + 2] = tat + interval
            else:
                self._insert(base, s, mask, tag, tat + interval, tat + interval)
            return 0

    # ------------------------------------------------------- counts by owner
    def count_add(self, base: int, tag: int, owner: int, owners: int, delta: int, limit: int, now: int,
                  ttl: int) -> int:
        if not 0 <= owner < owners or owners > 4096:
            raise ValueError("owner outside 0..owners-1")
        s, mask = self._table(base)
        w = self.w
        with _Locked(self.fd, base + H_LOCK):
            total = mine = 0
            for i in range(owners):
                j, found = self._find(s, mask, owner_tag(tag, i))
                if found:
                    c = w[s + j * SLOT + 1] & 0xFFFFFFFF
                    total += c
                    if i == owner:
                        mine = c
            if delta > 0 and limit > 0 and total + delta > limit:
                return -1
            own = max(0, mine + delta)
            total += own - mine
            mt = owner_tag(tag, owner)
            j, found = self._find(s, mask, mt)
            if own == 0:
                if found:
                    self._remove(base, s, mask, j)
            elif found:
                w[s + j * SLOT + 1] = (owner << 32) | own
                w[s + j * SLOT + 2] = now + ttl
            else:
                self._insert(base, s, mask, mt, (owner << 32) | own, now + ttl)
            return total

    def drop_owner(self, base: int, owner: int) -> int:
        s, mask = self._table(base)
        w = self.w
        removed = 0
        with _Locked(self.fd, base + H_LOCK):
            i = 0
            while i <= mask:
                si = s + i * SLOT
                if w[si] != 0 and w[si + 1] >> 32 == owner:
                    self._remove(base, s, mask, i)
                    removed += 1
                    continue
                i += 1
        return removed


def owner_tag(tag: int, owner: int) -> int:
    """The tag of (key, owner), as pyvs/shared/_zone.c computes it."""
    t = ((tag + (owner + 1) * _GOLDEN) & _U64) & INT64_MAX
    return t or 1

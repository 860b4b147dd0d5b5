"""The cache store every worker shares: objects in files on tmpfs, a copy of the hot
ones in each worker, change counters in the section's zone.

Theory of operation
-------------------
nginx's ``proxy_cache`` keeps its objects in files and its keys in a shared-memory
zone; with the files on tmpfs the cache lives in RAM and every worker sees it. pyvs
does the same with a layout of its own (:mod:`pyvs.accel.cache_files`):

* **Files.** One file per key in the section's directory, named by the key's hash.
  It holds the key and every stored variant of it (head fields, body, the times of
  RFC 9111 4.2.3). A worker writes a new version under a temporary name and renames
  it over the old one: a reader gets the old file or the new one whole, never a part.
* **Local copies.** Each worker keeps the variants it served recently in its own
  memory (``cache.local`` bytes, LRU), so a hit on a hot object makes no system call.
* **Change counters.** Every change of a key (store, invalidation, purge, eviction)
  bumps one of ``CACHE_EPOCHS`` counters in the section's zone (the key's hash picks
  which) once the file has changed. A local copy remembers the counter value it was
  checked at and the identity of the file it was read from (inode and modification
  time, which tmpfs and disk file systems alike never give to another file at once).
  While the counter has not moved the copy is current; when it has, one ``stat``
  tells whether the file is still the one copied (keep), was replaced (read again) or
  is gone (drop). A hit in one worker is therefore a hit in all, and a change in one
  is seen by all at their next lookup of a key of that counter.
* **Bytes.** The zone counts what the files take in memory (whole pages, as tmpfs
  charges them) and how many there are. A store that takes the total past ``size``
  evicts: the worker that gets the eviction flag lists the directory in a thread and
  unlinks the least recently used files (by access time: workers mark the files of
  their local hits once a second) until a tenth of ``size`` is free, then sets the
  counts from what it listed (which also mends any drift of the counts).

The name of a key's file is Python's ``hash`` of the key: workers are forked from one
supervisor and share its hash seed. Two keys with one hash share a file; the file
names its key, and storing one replaces the other (an eviction).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from pyvs.accel.cache import LOCK_TIMEOUT, CacheStore, Entry
from pyvs.accel.cache_files import (
    C_BYTES,
    C_EVICTING,
    C_EVICTIONS,
    C_KEYS,
    CACHE_EPOCHS,
    MASK,
    CacheArea,
    alive,
    decode,
    encode,
)
from pyvs.shared.zone import TAG_MASK

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("pyvs.cache")

TOUCH_INTERVAL = 1.0  # seconds between a worker's access-time updates of the files it hit
EVICT_STALE = 30.0  # an eviction flag older than this belonged to a worker that died holding it
TEMP_STALE = 60.0  # a temporary file this old was left by a worker that died writing it
PAGE = 4096

Ident = tuple[int, int]  # (st_ino, st_mtime_ns) of a key's file; NONE when there is none
NONE: Ident = (-1, -1)


class Stored(NamedTuple):
    """A key's file as read: its identity and memory charge, its key, its variants."""

    ident: Ident
    charge: int
    key: bytes
    variants: list[Entry]


class SharedStore(CacheStore):
    """A :class:`CacheStore` whose objects all workers share (module docstring).

    The inherited ``keys``/``bytes`` are this worker's local copies (bounded by
    ``local``); ``limit`` is the shared store's size."""

    __slots__ = ("_seq", "area", "directory", "failures", "local", "stamps", "store_errors", "touch_handle",
                 "touched", "words")

    def __init__(self, area: CacheArea, *, size: int, max_object: int, local: int) -> None:
        super().__init__(size, max_object)
        self.area = area
        self.words = area.zone.words
        self.directory = area.directory
        self.local = local
        self.stamps: dict[bytes, tuple[int, Ident]] = {}  # key -> (change counter, file) of its local copy
        self.touched: set[int] = set()  # hashes of keys hit since the last access-time update
        self.touch_handle: asyncio.TimerHandle | None = None
        self._seq = itertools.count()
        self.failures: set[int | None] = set()  # errnos already logged
        self.store_errors = 0

    # ------------------------------------------------------------ lookups
    def variants(self, key: bytes) -> list[Entry] | None:
        h = hash(key) & MASK
        epoch = self.words.get(h % CACHE_EPOCHS)
        got = self.keys.get(key)
        if got is not None:
            stamp = self.stamps[key]
            if stamp[0] != epoch:
                ident = self._ident(h)
                if ident != stamp[1]:
                    self._forget(key)
                    return self._load(key, h, epoch)
                self.stamps[key] = (epoch, ident)
            self.keys.move_to_end(key)
            self._touch(h)
            return got
        return self._load(key, h, epoch)

    def version(self, key: bytes) -> object:
        """The identity of the key's file: a request waiting for another worker's
        fetch is woken when it changes (stored, replaced or dropped)."""
        return self._ident(hash(key) & MASK)

    def _path(self, h: int) -> str:
        return f"{self.directory}/{h:016x}"

    def _ident(self, h: int) -> Ident:
        try:
            st = os.stat(self._path(h))
        except OSError:
            return NONE
        return st.st_ino, st.st_mtime_ns

    def _read(self, h: int) -> Stored | None:
        try:
            with open(self._path(h), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError:
            return None
        got = decode(data)
        return Stored((st.st_ino, st.st_mtime_ns), st.st_blocks * 512, got[0], got[1]) if got is not None else None

    def _load(self, key: bytes, h: int, epoch: int) -> list[Entry] | None:
        stored = self._read(h)
        if stored is None or stored.key != key:
            return None
        self._keep(key, stored.variants, (epoch, stored.ident))
        self._touch(h)
        return stored.variants

    def _keep(self, key: bytes, variants: list[Entry], stamp: tuple[int, Ident]) -> None:
        """Make ``variants`` this worker's local copy of ``key`` (if it fits)."""
        self._forget(key)
        size = sum(v.size for v in variants)
        if size > self.local:
            return
        self.keys[key] = variants
        self.stamps[key] = stamp
        self.bytes += size
        while self.bytes > self.local:
            old, gone = self.keys.popitem(last=False)
            self.stamps.pop(old, None)
            self.bytes -= sum(v.size for v in gone)

    def _forget(self, key: bytes) -> None:
        gone = self.keys.pop(key, None)
        if gone is not None:
            self.bytes -= sum(v.size for v in gone)
            self.stamps.pop(key, None)

    # ------------------------------------------------------------ changes
    def put(self, key: bytes, entry: Entry) -> None:
        """Store ``entry`` in the key's file, replacing the variant with its Vary values."""
        if entry.size > self.limit:
            return
        h = hash(key) & MASK
        w = self.words
        # The counter before the change: a change by another worker between our
        # rename and our bump then still makes this copy be checked (one stat).
        before = w.get(h % CACHE_EPOCHS)
        current = self._read(h)
        variants = [v for v in current.variants if v.vary != entry.vary] if current and current.key == key else []
        variants.append(entry)
        written = self._write(h, encode(key, variants), current.ident if current is not None else NONE)
        if written is None:
            return
        ident, charge = written
        w.add(C_BYTES, charge - (current.charge if current is not None else 0))
        if current is None:
            w.add(C_KEYS, 1)
        w.add(h % CACHE_EPOCHS, 1)
        self._keep(key, variants, (before, ident))
        self.stores += 1
        if w.get(C_BYTES) > self.limit:
            self.evict()

    def _write(self, h: int, data: bytes, expected: Ident) -> tuple[Ident, int] | None:
        """Write a key's file whole (temporary name, then rename over the file read as
        ``expected``); its identity and memory charge. None when it could not be
        written, or the file changed since it was read (another worker's store or
        invalidation: theirs stands)."""
        tmp = f"{self.directory}/.tmp.{os.getpid()}.{next(self._seq)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._cannot_store(exc)
            return None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if self._ident(h) != expected:
                os.unlink(tmp)
                return None
            os.replace(tmp, self._path(h))
        except OSError as exc:  # tmpfs full: the response goes on uncached
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._cannot_store(exc)
            return None
        return (st.st_ino, st.st_mtime_ns), max(st.st_blocks * 512, PAGE)

    def _cannot_store(self, exc: OSError) -> None:
        """Say once per worker and reason that responses go on uncached (tmpfs full,
        permissions): not once per response."""
        if exc.errno not in self.failures:
            self.failures.add(exc.errno)
            log.warning("cache %s: cannot store in %s: %s; responses go on uncached", self.area.where,
                        self.directory, exc.strerror)
        self.store_errors += 1

    def invalidate(self, key: bytes) -> int:
        """Drop every variant of ``key`` in every worker; how many there were."""
        self._forget(key)
        h = hash(key) & MASK
        current = self._read(h)
        if current is None or current.key != key:
            return 0
        from pyvs.accel.cache_files import remove

        return len(current.variants) if remove(self.area, f"{h:016x}", current.charge) else 0

    def purge(self, prefix: bytes) -> int:
        """This worker's copies of keys starting with ``prefix`` go (the files are the
        supervisor's part: :func:`pyvs.accel.cache_files.purge_files`)."""
        keys = [k for k in self.keys if k.startswith(prefix)]
        for key in keys:
            self._forget(key)
        return len(keys)

    # ------------------------------------------- collapsing across workers
    def claim_fetch(self, key: bytes) -> bool:
        """Claim the fetch of ``key`` for this worker in the zone's fetch table; False
        while another live worker's claim holds (it ends by :meth:`release_fetch` or
        after ``LOCK_TIMEOUT``). A claim whose worker died is taken over."""
        w, base, tag = self.words, self.area.fetches.base, (hash(key) & TAG_MASK) or 1
        now = int(time.monotonic() * 1_000_000)
        token = (os.getpid() << 32) | (((id(self) >> 4) & 0xFFF) << 20) | (next(self._seq) & 0xFFFFF)
        held = w.table_get(base, tag, now, 0)  # (a lookup that does not push the expiry)
        if held != -1:
            if alive(held >> 32):
                return False
            return w.table_claim(base, tag, token, now, int(LOCK_TIMEOUT * 1_000_000), held) == token
        return w.table_claim(base, tag, token, now, int(LOCK_TIMEOUT * 1_000_000), -1) == token

    def release_fetch(self, key: bytes) -> None:
        self.words.table_del(self.area.fetches.base, (hash(key) & TAG_MASK) or 1)

    def fetching_elsewhere(self, key: bytes) -> bool:
        now = int(time.monotonic() * 1_000_000)
        held = self.words.table_get(self.area.fetches.base, (hash(key) & TAG_MASK) or 1, now, 0)
        return held != -1 and alive(held >> 32)

    # ----------------------------------------------------- LRU and bounds
    def _touch(self, h: int) -> None:
        touched = self.touched
        if h in touched:
            return
        if not touched and self.touch_handle is None:
            import asyncio

            try:
                self.touch_handle = asyncio.get_running_loop().call_later(TOUCH_INTERVAL, self.flush_touches)
            except RuntimeError:  # no loop (a unit test): the next eviction updates them
                pass
        touched.add(h)

    def flush_touches(self) -> None:
        """Mark the files this worker hit as recently used: their access time (the
        modification time, part of a file's identity, stays)."""
        self.touch_handle = None
        touched, self.touched = self.touched, set()
        now = time.time_ns()
        for h in touched:
            path = self._path(h)
            with contextlib.suppress(OSError):
                os.utime(path, ns=(now, os.stat(path).st_mtime_ns))

    def evict(self) -> None:
        """Make room (:meth:`evict_now`) in a thread: listing a large directory takes
        long enough to stall the worker's loop."""
        self.flush_touches()
        try:
            import asyncio

            asyncio.get_running_loop().run_in_executor(None, self.evict_now)
        except RuntimeError:  # no loop (a unit test)
            self.evict_now()

    def evict_now(self) -> int:
        """Unlink least recently used files until a tenth of ``size`` is free; how many.
        One worker at a time (the flag word); the counts are set from the listing."""
        w = self.words
        now = int(time.monotonic() * 1_000_000)
        held = w.get(C_EVICTING)
        if held and now - held < EVICT_STALE * 1_000_000:
            return 0  # another worker is at it
        if not w.cas(C_EVICTING, held, now):
            return 0
        try:
            files: list[tuple[int, int, str]] = []
            wall = time.time()
            try:
                listing = list(os.scandir(self.directory))
            except OSError:
                listing = []
            for de in listing:
                try:
                    st = de.stat()
                except OSError:
                    continue
                if de.name.startswith("."):
                    if de.name.startswith(".tmp.") and wall - st.st_mtime > TEMP_STALE:
                        with contextlib.suppress(OSError):
                            os.unlink(de.path)
                    continue
                files.append((st.st_atime_ns, max(st.st_blocks * 512, PAGE), de.name))
            files.sort()
            total = sum(f[1] for f in files)
            target = self.limit - self.limit // 10
            evicted = 0
            for _, charge, name in files:
                if total <= target:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.directory}/{name}")
                    w.add(int(name, 16) % CACHE_EPOCHS, 1)
                total -= charge
                evicted += 1
            w.set(C_BYTES, total)
            w.set(C_KEYS, len(files) - evicted)
            w.add(C_EVICTIONS, evicted)
            return evicted
        finally:
            w.set(C_EVICTING, 0)

    def statistics(self) -> dict[str, int]:
        w = self.words
        return {"hits": self.hits, "misses": self.misses, "stores": self.stores,
                "evictions": max(0, w.get(C_EVICTIONS)), "collapsed": self.collapsed,
                "entries": max(0, w.get(C_KEYS)), "bytes": max(0, w.get(C_BYTES)),
                "local_bytes": self.bytes, "store_errors": self.store_errors}


"""The cache store every worker shares: objects in files on tmpfs, a copy of the hot
ones in each worker, change counters in the shared zone.

Theory of operation
-------------------
nginx's ``proxy_cache`` keeps its objects in files and its keys in a shared-memory
zone; with the files on tmpfs the cache lives in RAM and every worker sees it. pyvs
does the same with a layout of its own:

* **Files.** One file per key in the section's directory
  (``<cache.path>/pyvs-cache-<supervisor pid>/<section>``), named by the key's hash.
  It holds the key and every stored variant of it (head fields, body, the times of
  RFC 9111 4.2.3). A worker writes a new version under a temporary name and renames
  it over the old one: a reader gets the old file or the new one whole, never a part.
* **Local copies.** Each worker keeps the variants it served recently in its own
  memory (``cache.local`` bytes, LRU), so a hit on a hot object makes no system call.
* **Change counters.** Every change of a key (store, invalidation, purge) bumps one
  of ``CACHE_EPOCHS`` counters in the shared zone (the key's hash picks which) once
  the file has changed. A local copy remembers the counter value and the inode of the
  file it was read from. While the counter has not moved the copy is current; when it
  has, one ``stat`` tells whether the file is still the one copied (same inode: keep
  it), was replaced (read it again) or is gone (drop the copy). A hit in one worker
  is therefore a hit in all, and an invalidation in one is seen by all at their next
  lookup of a key of that counter.
* **Bytes.** The zone counts the files' bytes and keys. A store that takes the total
  past ``size`` evicts: the worker that gets the eviction flag lists the directory and
  unlinks the least recently used files (by access time: workers touch the files of
  their local hits once a second) until a tenth of ``size`` is free, then sets the
  counts from what it listed (which also mends any drift of the counts). An evicted
  key's local copies stay valid responses; they leave with their worker's own LRU.
* **Reload** keeps a section whose place and settings did not change (same
  directory): the new generation's zone counts its files before the fork
  (:func:`adopt`). The supervisor removes its root at exit, and the roots of
  instances that are no longer running at start (:func:`sweep_roots`).

The name of a key's file is Python's ``hash`` of the key: workers are forked from one
supervisor and share its hash seed. Two keys with one hash share a file; the file
names its key, and storing one replaces the other (an eviction). Files hold
``marshal`` data, which is only safe to read from a trusted place: the root
directory is the instance's own (mode 0700).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import os
import shutil
import struct
import time
from typing import TYPE_CHECKING, NamedTuple

from pyvs.accel.cache import LOCK_TIMEOUT, CacheStore, Entry
from pyvs.shared.state import C_BYTES, C_EVICTING, C_EVICTIONS, C_KEYS, CACHE_EPOCHS, CacheArea
from pyvs.shared.zone import TAG_MASK

if TYPE_CHECKING:
    from pyvs.shared.zone import Words

log = logging.getLogger("pyvs.cache")

MAGIC = b"PYVC1"
_HEAD = struct.Struct(">5sI")
_MASK = (1 << 64) - 1
TOUCH_INTERVAL = 1.0  # seconds between a worker's access-time updates of the files it hit
EVICT_STALE = 10.0  # an eviction flag older than this belonged to a worker that died holding it
TEMP_STALE = 60.0  # a temporary file this old was left by a worker that died writing it


class Stored(NamedTuple):
    """A key's file as read: its inode and size, the key it names, its variants."""

    inode: int
    size: int
    key: bytes
    variants: list[Entry]


def encode(key: bytes, variants: list[Entry]) -> bytes:
    rows = [(e.status, e.fields, e.body, e.vary, e.request_time, e.response_time, e.date, e.age_value, e.lifetime)
            for e in variants]
    return _HEAD.pack(MAGIC, len(key)) + key + marshal.dumps(rows)


def file_key(data: bytes) -> bytes | None:
    """The key a file's bytes name (None: not a store file)."""
    if len(data) < _HEAD.size:
        return None
    magic, n = _HEAD.unpack_from(data)
    if magic != MAGIC or len(data) < _HEAD.size + n:
        return None
    return data[_HEAD.size:_HEAD.size + n]


def decode(data: bytes) -> tuple[bytes, list[Entry]] | None:
    """A file's key and variants; None for anything else (a torn or foreign file)."""
    key = file_key(data)
    if key is None:
        return None
    try:
        rows = marshal.loads(data[_HEAD.size + len(key):])
        variants = [Entry(status, fields, body, tuple(tuple(v) for v in vary), request_time=rt, response_time=st,
                          date=date, age_value=age, lifetime=life)
                    for status, fields, body, vary, rt, st, date, age, life in rows]
    except (EOFError, ValueError, TypeError):
        return None
    return key, variants


class SharedStore(CacheStore):
    """A :class:`CacheStore` whose objects all workers share (module docstring).

    The inherited ``keys``/``bytes`` are this worker's local copies (bounded by
    ``local``); ``limit`` is the shared store's size."""

    __slots__ = ("_seq", "area", "base", "directory", "failures", "local", "stamps", "store_errors", "touch_handle",
                 "touched", "words")

    def __init__(self, area: CacheArea, words: Words, *, size: int, max_object: int, local: int) -> None:
        super().__init__(size, max_object)
        self.area = area
        self.base = area.base
        self.words = words
        self.directory = area.directory
        self.local = local
        self.stamps: dict[bytes, tuple[int, int]] = {}  # key -> (change counter, inode) of its local copy
        self.touched: set[int] = set()  # hashes of keys hit since the last access-time update
        self.touch_handle: object | None = None
        self._seq = itertools.count()
        self.failures: set[int | None] = set()  # errnos already logged
        self.store_errors = 0

    # ------------------------------------------------------------ lookups
    def variants(self, key: bytes) -> list[Entry] | None:
        h = hash(key) & _MASK
        epoch = self.words.get(self.base + h % CACHE_EPOCHS)
        got = self.keys.get(key)
        if got is not None:
            stamp = self.stamps[key]
            if stamp[0] != epoch:
                inode = self._inode(h)
                if inode != stamp[1]:
                    self._forget(key)
                    return self._load(key, h, epoch)
                self.stamps[key] = (epoch, inode)
            self.keys.move_to_end(key)
            self._touch(h)
            return got
        return self._load(key, h, epoch)

    def _path(self, h: int) -> str:
        return f"{self.directory}/{h:016x}"

    def _inode(self, h: int) -> int:
        try:
            return os.stat(self._path(h)).st_ino
        except OSError:
            return -1

    def _read(self, h: int) -> Stored | None:
        try:
            with open(self._path(h), "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                data = f.read()
        except OSError:
            return None
        got = decode(data)
        return Stored(inode, len(data), got[0], got[1]) if got is not None else None

    def _load(self, key: bytes, h: int, epoch: int) -> list[Entry] | None:
        stored = self._read(h)
        if stored is None or stored.key != key:
            return None
        self._keep(key, stored.variants, (epoch, stored.inode))
        self._touch(h)
        return stored.variants

    def _keep(self, key: bytes, variants: list[Entry], stamp: tuple[int, int]) -> None:
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
        h = hash(key) & _MASK
        current = self._read(h)
        variants = [v for v in current.variants if v.vary != entry.vary] if current and current.key == key else []
        variants.append(entry)
        data = encode(key, variants)
        inode = self._write(h, data)
        if inode < 0:
            return
        w, base = self.words, self.base
        w.add(base + C_BYTES, len(data) - (current.size if current is not None else 0))
        if current is None:
            w.add(base + C_KEYS, 1)
        epoch = w.add(base + h % CACHE_EPOCHS, 1)
        self._keep(key, variants, (epoch, inode))
        self.stores += 1
        if w.get(base + C_BYTES) > self.limit:
            self.evict()

    def _write(self, h: int, data: bytes) -> int:
        """Write a key's file whole (temporary name, then rename); its inode, or -1."""
        tmp = f"{self.directory}/.tmp.{os.getpid()}.{next(self._seq)}"
        for attempt in (0, 1):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:
                if attempt:
                    return -1
                with contextlib.suppress(OSError):
                    os.makedirs(os.path.dirname(self.directory), mode=0o700, exist_ok=True)
                    os.makedirs(self.directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                self._cannot_store(exc)
                return -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            inode = os.fstat(fd).st_ino
        except OSError as exc:  # tmpfs full: the response goes on uncached
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._cannot_store(exc)
            return -1
        os.close(fd)
        os.replace(tmp, self._path(h))
        return inode

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
        h = hash(key) & _MASK
        current = self._read(h)
        if current is None or current.key != key:
            return 0
        try:
            os.unlink(self._path(h))
        except OSError:
            return 0
        w, base = self.words, self.base
        w.add(base + C_BYTES, -current.size)
        w.add(base + C_KEYS, -1)
        w.add(base + h % CACHE_EPOCHS, 1)
        return len(current.variants)

    def purge(self, prefix: bytes) -> int:
        """Drop every key that starts with ``prefix``; how many variants."""
        for key in [k for k in self.keys if k.startswith(prefix)]:
            self._forget(key)
        n = 0
        for name in self._names():
            try:
                with open(f"{self.directory}/{name}", "rb") as f:
                    head = f.read(_HEAD.size)
                    named = file_key(head + f.read(_HEAD.unpack(head)[1])) if len(head) == _HEAD.size else None
            except (OSError, struct.error):
                continue
            if named is not None and named.startswith(prefix):
                n += self.invalidate(named)
        return n

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.directory) if not n.startswith(".")]
        except OSError:
            return []

    # ------------------------------------------- collapsing across workers
    def _fetch_tag(self, key: bytes) -> int:
        return (hash(key) & TAG_MASK) or 1

    def claim_fetch(self, key: bytes) -> bool:
        """Claim the fetch of ``key`` for this worker in the zone's fetch table; False
        while another worker's claim holds (it ends by :meth:`release_fetch` or after
        ``LOCK_TIMEOUT``, whichever comes first)."""
        token = (os.getpid() << 32) | (((id(self) >> 4) & 0xFFF) << 20) | (next(self._seq) & 0xFFFFF)
        now = int(time.monotonic() * 1_000_000)
        got = self.words.table_claim(self.area.fetches.base, self._fetch_tag(key), token, now,
                                     int(LOCK_TIMEOUT * 1_000_000), -1)
        return got == token

    def release_fetch(self, key: bytes) -> None:
        self.words.table_del(self.area.fetches.base, self._fetch_tag(key))

    def fetching_elsewhere(self, key: bytes) -> bool:
        now = int(time.monotonic() * 1_000_000)
        return self.words.table_get(self.area.fetches.base, self._fetch_tag(key), now, 0) != -1

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
        """Mark the files this worker hit as recently used (their access time)."""
        self.touch_handle = None
        touched, self.touched = self.touched, set()
        for h in touched:
            with contextlib.suppress(OSError):
                os.utime(self._path(h))

    def evict(self) -> int:
        """Unlink least recently used files until a tenth of ``size`` is free; how many.
        One worker at a time (the flag word); the counts are set from the listing."""
        w, flag = self.words, self.base + C_EVICTING
        now = int(time.monotonic() * 1_000_000)
        held = w.get(flag)
        if held and now - held < EVICT_STALE * 1_000_000:
            return 0  # another worker is at it
        if not w.cas(flag, held, now):
            return 0
        try:
            self.flush_touches()
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
                    if wall - st.st_mtime > TEMP_STALE:
                        with contextlib.suppress(OSError):
                            os.unlink(de.path)
                    continue
                files.append((st.st_atime_ns, st.st_size, de.path))
            files.sort()
            total = sum(f[1] for f in files)
            target = self.limit - self.limit // 10
            evicted = 0
            for _, size, path in files:
                if total <= target:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(path)
                total -= size
                evicted += 1
            w.set(self.base + C_BYTES, total)
            w.set(self.base + C_KEYS, len(files) - evicted)
            w.add(self.base + C_EVICTIONS, evicted)
            self.evictions += evicted
            return evicted
        finally:
            w.set(flag, 0)

    def statistics(self) -> dict[str, int]:
        w, base = self.words, self.base
        return {"hits": self.hits, "misses": self.misses, "stores": self.stores,
                "evictions": max(0, w.get(base + C_EVICTIONS)), "collapsed": self.collapsed,
                "entries": max(0, w.get(base + C_KEYS)), "bytes": max(0, w.get(base + C_BYTES)),
                "local_bytes": self.bytes, "store_errors": self.store_errors}


def adopt(area: CacheArea, words: Words) -> None:
    """Count the files a section's directory already holds (a reload that kept the
    section) into a new zone, before the new generation forks."""
    total = keys = 0
    try:
        listing = list(os.scandir(area.directory))
    except OSError:
        return
    for de in listing:
        if de.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            total += de.stat().st_size
            keys += 1
    words.set(area.base + C_BYTES, total)
    words.set(area.base + C_KEYS, keys)


def root_of(path: str, pid: int) -> str:
    return f"{path}/pyvs-cache-{pid}"


def sweep_roots(paths: set[str], pid: int, *, remove_own: bool = False) -> None:
    """Remove cache roots under ``paths`` of instances no longer running (and this
    instance's own with ``remove_own``, at exit)."""
    for path in paths:
        try:
            names = os.listdir(path)
        except OSError:
            continue
        for name in names:
            if not name.startswith("pyvs-cache-"):
                continue
            try:
                owner = int(name.removeprefix("pyvs-cache-"))
            except ValueError:
                continue
            if owner == pid:
                if not remove_own:
                    continue
            elif _alive(owner):
                continue
            shutil.rmtree(f"{path}/{name}", ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

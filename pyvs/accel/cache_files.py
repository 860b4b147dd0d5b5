"""Where the shared cache keeps its objects: the section directories, their zone
files, the file format, and what the supervisor does with them (create, purge, sweep).

Layout
------
``<cache.path>/pyvs-cache-<supervisor pid>/`` is the instance's root, created by the
supervisor (its own, mode 0711) before it forks any worker: no other user can
create, rename or replace anything in it, and an existing one it did not make is
refused (the name is predictable). Each ``cache`` section has a directory in it
(owned by the workers' user, mode 0700), named by a hash of where the section is written, its settings
and the workers' uid, so that a reload keeping the section keeps the directory (and
its objects) and any change starts a new one. A section directory holds:

* ``.zone``: the section's shared words (:class:`pyvs.shared.zone.Zone` over a file):
  ``CACHE_EPOCHS`` change counters, the bytes and objects stored, evictions, the
  eviction flag, then the table of fetches under way (collapsing across workers).
  Being a file of the directory, it is the same memory for every generation of
  workers: a change made by a worker of the old generation during a reload's grace
  period is seen by the new one;
* one file per key (a hex hash), written under ``.tmp.*`` and renamed into place.

The supervisor removes its root when it exits, and at start the roots of instances
no longer running (and a root left with its own pid, from a container's previous
life).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import shutil
import stat
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvs.accel.cache import Entry
from pyvs.shared.state import TableInfo
from pyvs.shared.zone import Zone, table_capacity, table_words

if TYPE_CHECKING:
    from pyvs.runtime.privileges import Identity

log = logging.getLogger("pyvs.cache")

CACHE_EPOCHS = 64  # change counters per section (a key's is hash(key) % 64)
C_BYTES, C_KEYS, C_EVICTIONS, C_EVICTING = CACHE_EPOCHS, CACHE_EPOCHS + 1, CACHE_EPOCHS + 2, CACHE_EPOCHS + 3
CACHE_WORDS = CACHE_EPOCHS + 8
CACHE_FETCHES = 4096  # keys being fetched at once per section (collapsing across workers)
MASK = (1 << 64) - 1
MAGIC = b"PYVC1"
_HEAD = struct.Struct(">5sI")


@dataclass(frozen=True)
class CacheArea:
    """One ``cache`` section: its directory and its zone (the file ``.zone`` in it)."""

    directory: str
    where: str  # LISTENER, LISTENER.routes[j] or LISTENER.vhosts[i].routes[j]
    zone: Zone
    fetches: TableInfo


def root_of(path: str, pid: int) -> str:
    return f"{path}/pyvs-cache-{pid}"


def open_section(where: str, section: Any, pid: int, identity: Identity | None) -> CacheArea:
    """Create (or find, after a reload) a section's directory and zone, in the
    supervisor before the fork. ValueError names what is wrong."""
    uid = identity.uid if identity is not None else os.geteuid()
    gid = identity.gid if identity is not None else os.getegid()
    fs = os.statvfs(section.path)
    if fs.f_bavail * fs.f_frsize < section.size:  # a container's /dev/shm is often 64 MiB
        log.warning("%s.cache: %s has %d MiB free, less than size (%d MiB): stores will fail when it is full",
                    where, section.path, fs.f_bavail * fs.f_frsize >> 20, section.size >> 20)
    root = root_of(section.path, pid)
    euid, egid = os.geteuid(), os.getegid()
    _private_dir(root, euid, egid, 0o711)  # the supervisor's: workers may only pass through
    ident = hashlib.blake2b(f"{where} {uid} {section.model_dump_json()}".encode(), digest_size=8).hexdigest()
    directory = f"{root}/{ident}"
    _private_dir(directory, uid, gid, 0o700)
    cap = table_capacity(CACHE_FETCHES)
    zone = Zone(CACHE_WORDS + table_words(cap), path=f"{directory}/.zone")  # (refuses a file planted there)
    fetches = TableInfo(CACHE_WORDS, cap, CACHE_FETCHES)
    if zone.created:
        zone.init_table(fetches.base, cap, CACHE_FETCHES)
    return CacheArea(directory, where, zone, fetches)


def _private_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """``path`` is a directory owned by ``uid`` that nobody else can write (made if
    missing; one found otherwise is refused: its name is predictable)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), uid) or st.st_mode & 0o022:
        raise ValueError(f"cache directory {path} is not this instance's own (a directory owned by uid {uid} "
                         f"that only it can write): owner {st.st_uid}, mode {stat.filemode(st.st_mode)}")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


# ------------------------------------------------------------------ format
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
    """A file's key and variants; None for anything else (a foreign file). Files are
    only ever written by the instance's workers, in a directory only they can write
    (``marshal`` must not read untrusted data)."""
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


def read_key(path: str) -> bytes | None:
    """The key a file names, reading only its first bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # (the supervisor reads these: no FIFO may stall it)
            os.close(fd)
            return None
        with open(fd, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return None
            return file_key(head + f.read(_HEAD.unpack(head)[1]))
    except (OSError, struct.error):
        return None


def object_names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except OSError:
        return []


def remove(area: CacheArea, name: str, charge: int) -> bool:
    """Unlink one object file and count it out; the key's counter moves (every copy
    of it in every worker is checked again)."""
    try:
        os.unlink(f"{area.directory}/{name}")
    except OSError:
        return False
    w = area.zone.words
    w.add(C_BYTES, -charge)
    w.add(C_KEYS, -1)
    w.add(int(name, 16) % CACHE_EPOCHS, 1)
    return True


def purge_files(area: CacheArea, key: bytes, prefix: bool) -> int:
    """Drop ``key`` (or every key starting with it) from the section for the whole
    instance: the supervisor's part of a purge (workers' copies follow the counters).
    Returns how many objects went."""
    names = object_names(area.directory) if prefix else [f"{hash(key) & MASK:016x}"]
    n = 0
    for name in names:
        path = f"{area.directory}/{name}"
        named = read_key(path)
        if named is None or not (named.startswith(key) if prefix else named == key):
            continue
        try:
            charge = os.stat(path).st_blocks * 512
        except OSError:
            continue
        n += remove(area, name, charge)
    return n


def sweep_roots(paths: set[str], pid: int) -> None:
    """Remove cache roots under ``paths`` whose instance is no longer running (and one
    named after this very pid: a previous life of this process number)."""
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
            if owner != pid and alive(owner):
                continue
            full = f"{path}/{name}"
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.lstat(full).st_mode):
                    continue
            shutil.rmtree(full, ignore_errors=True)


def remove_root(paths: set[str], pid: int) -> None:
    """At exit: this instance's objects go."""
    for path in paths:
        shutil.rmtree(root_of(path, pid), ignore_errors=True)


def alive(pid: int) -> bool:
    """Is process ``pid`` running (as far as this process can tell)?"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The RAM cache end to end (issue 16): curl and raw clients through pyvs
(two workers: the store is shared, so "the second request hits" whichever worker takes it).
The backend counts the requests it gets: a hit never reaches it."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, RawBackend, curl, free_port, read_head


class Origin:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = asyncio.Event()
        self.conditional = 0
        self.swr_conditional = 0
        self.swr_release = asyncio.Event()

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            method, path = head.split(b" ", 2)[:2]
            p = path.decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await r.readexactly(length)
            self.hits[p] = self.hits.get(p, 0) + 1
            n = self.hits[p]
            cc = b"public, max-age=60"
            extra = b""
            if p.startswith("/nostore"):
                cc = b"no-store"
            if p.startswith("/private"):
                cc = b"private, max-age=60"
            if p.startswith("/vary"):
                extra = b"Vary: Accept-Language\r\n"
                lang = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"accept-language")]
                body = b"lang=" + (lang[0].split(b":")[1].strip() if lang else b"-") + b" n=%d" % n
            else:
                body = (b"%s n=%d " % (path, n)) * 50
            if p.startswith("/slow"):
                await self.release.wait()  # held until every collapsed client has asked
            if p.startswith("/etag"):
                extra += b'ETag: "e1"\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n'
            if p.startswith("/swr"):
                if b'if-none-match: "s1"' in head.lower():
                    self.swr_conditional += 1
                    await self.swr_release.wait()  # the stale answer must not wait for this
                    w.write(b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: "s1"\r\n\r\n')
                    await w.drain()
                    continue
                cc = b"max-age=1, stale-while-revalidate=30"
                extra += b'ETag: "s1"\r\nAge: 1\r\n'  # stale at once, within its window
            if p.startswith("/reval"):
                if b'if-none-match: "r1"' in head.lower():
                    self.conditional += 1
                    w.write(b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: "r1"\r\n\r\n')
                    await w.drain()
                    continue
                extra += b'ETag: "r1"\r\nAge: 60\r\n'  # as old as its max-age: stale at once
            if method == b"POST":
                cc, body = b"no-store", b"posted"
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: " + cc + b"\r\n" + extra
                    + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()


@pytest.fixture(scope="module")
def rig(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Origin, LoopThread]]:
    origin = Origin()
    backend = RawBackend(loop_thread, origin)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"],
            "routes": [
                {"match": {"path_prefix": "/z/"}, "backend": "be",
                 "compress": {"algorithms": ["gzip"], "types": ["text/plain"], "min_size": 10},
                 "cache": {"size": "1m", "max_object": "64k"}},
                {"backend": "be", "cache": {"size": "1m", "max_object": "64k"}},
            ],
        }],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    p = Pyvs(cfg, tmp_path_factory.mktemp("cache"), workers=2)
    yield port, origin, loop_thread
    p.stop()
    backend.close()


def get(port: int, path: str, *headers: str, method: str = "GET") -> tuple[str, bytes]:
    args = [a for h in headers for a in ("-H", h)]
    if method != "GET":
        args += ["-X", method, "--data", "x"]
    r = curl("-D", "-", "-o", "/dev/stdout", *args, f"http://127.0.0.1:{port}{path}")
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    return head.decode().lower(), body


def test_public_object_is_served_from_cache(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    h1, b1 = get(port, "/logo.gif")
    h2, b2 = get(port, "/logo.gif")
    assert "x-cache: miss" in h1 and "x-cache: hit" in h2
    assert b1 == b2 and origin.hits["/logo.gif"] == 1
    assert "age: " in h2 and f"content-length: {len(b1)}" in h2


def test_no_store_and_private_reach_the_server(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    for path in ("/nostore", "/private"):
        get(port, path)
        h, _ = get(port, path)
        assert "x-cache: miss" in h and origin.hits[path] == 2


def test_authorization_is_not_answered_from_a_private_store(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    get(port, "/auth", "Authorization: Basic eDp5")  # public, max-age: storable even so (RFC 9111 3.5)
    h, _ = get(port, "/auth", "Authorization: Basic eDp5")
    assert "x-cache: hit" in h and origin.hits["/auth"] == 1


def test_vary_split(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    _, en1 = get(port, "/vary", "Accept-Language: en")
    _, fr1 = get(port, "/vary", "Accept-Language: fr")
    _, en2 = get(port, "/vary", "Accept-Language: en")
    assert en1 == en2 == b"lang=en n=1" and fr1 == b"lang=fr n=2"
    assert origin.hits["/vary"] == 2


def test_post_invalidates(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    get(port, "/doc")
    get(port, "/doc", method="POST")
    h, body = get(port, "/doc")
    assert "x-cache: miss" in h and origin.hits["/doc"] == 3 and b"n=3" in body


def test_compressed_variant_per_accept_encoding(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    h1, gz1 = get(port, "/z/page", "Accept-Encoding: gzip")
    h2, gz2 = get(port, "/z/page", "Accept-Encoding: gzip")
    h3, plain = get(port, "/z/page", "Accept-Encoding: identity")
    assert "content-encoding: gzip" in h1 and "content-encoding: gzip" in h2 and "x-cache: hit" in h2
    assert gzip.decompress(gz1) == gzip.decompress(gz2) == plain.replace(b"n=2", b"n=1")  # its own fetch
    assert "content-encoding" not in h3 and "x-cache: miss" in h3
    assert origin.hits["/z/page"] == 2  # one per Accept-Encoding variant


def body_of(response: bytes) -> bytes:
    """The body of a whole response read until the close, chunked framing removed."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out += rest[:n]
        body = rest[n + 2:]


def test_twenty_concurrent_misses_make_one_server_request(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, lt = rig

    async def one() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await r.read()
        w.close()
        return data

    async def burst() -> list[bytes]:
        tasks = [asyncio.ensure_future(one()) for _ in range(20)]
        while origin.hits.get("/slow", 0) < 1:  # the first miss reached the server
            await asyncio.sleep(0.01)
        # Give the other 19 time to arrive and wait behind it (one server request either
        # way: a late one finds the response stored).
        await asyncio.sleep(0.3)
        origin.release.set()
        return await asyncio.gather(*tasks)

    answers = lt.run(burst())
    bodies = {body_of(a) for a in answers}
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert len(bodies) == 1 and origin.hits["/slow"] == 1
    assert sum(b"x-cache: hit" in a.lower() for a in answers) == 19


def test_conditional_request_answered_304_from_cache(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    get(port, "/etag")
    h, body = get(port, "/etag", 'If-None-Match: "e1"')
    assert h.startswith("http/1.1 304") and body == b"" and 'etag: "e1"' in h and "x-cache: hit" in h
    h, _ = get(port, "/etag", 'If-None-Match: "other"')
    assert h.startswith("http/1.1 200")
    h, _ = get(port, "/etag", "If-Modified-Since: Wed, 02 Dec 2026 10:00:00 GMT")
    assert h.startswith("http/1.1 304")
    assert origin.hits["/etag"] == 1


def test_stale_entry_revalidated_with_304(rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, _ = rig
    h1, b1 = get(port, "/reval")
    h2, b2 = get(port, "/reval")  # stale: pyvs asks If-None-Match, the server says 304
    h3, b3 = get(port, "/reval")
    assert "x-cache: miss" in h1 and "x-cache: revalidated" in h2 and "x-cache: hit" in h3
    assert h2.startswith("http/1.1 200") and b1 == b2 == b3
    assert origin.hits["/reval"] == 2 and origin.conditional == 1
    for v in ("1.0", "1.1"):
        r = curl("--http" + v, "-H", 'If-None-Match: "zz"', "-o", "/dev/null", "-w", "%{http_code}",
                 f"http://127.0.0.1:{port}/reval")
        assert r.stdout == b"200"


def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(
        rig: tuple[int, Origin, LoopThread]) -> None:
    port, origin, lt = rig
    h, first = get(port, "/swr")
    assert "x-cache: miss" in h
    for _ in range(3):  # stale: answered from the store while one revalidation is on its way
        h, body = get(port, "/swr")
        assert "x-cache: stale" in h and body == first
    lt.run(wait_for(lambda: origin.swr_conditional == 1))

    async def release() -> None:
        origin.swr_release.set()

    lt.run(release())
    for _ in range(200):  # the 304 reaches the store a moment after the release
        h, body = get(port, "/swr")
        if "x-cache: stale" not in h:
            break
    assert "x-cache: hit" in h and body == first  # refreshed by the 304, same body
    assert origin.hits["/swr"] == 2 and origin.swr_conditional == 1  # one full fetch, one revalidation


async def wait_for(ok: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ok():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def two_workers(lt: LoopThread, tmp_path: Path) -> tuple[Origin, RawBackend, int, Pyvs]:
    """An origin and a 2-worker pyvs whose listener caches under ``tmp_path``."""
    origin = Origin()
    backend = RawBackend(lt, origin)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "be",
                       "cache": {"size": "1m", "max_object": "64k", "path": str(tmp_path)}}],
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    (tmp_path / "run").mkdir()
    return origin, backend, port, Pyvs(cfg, tmp_path / "run", workers=2)


def test_purge_through_the_admin_api_reaches_every_worker(loop_thread: LoopThread, tmp_path: Path) -> None:
    """One store for the instance (2 workers): an object fetched once is a hit in both
    workers, /status and /metrics count it, and POST /cache/purge?url=host/path drops it
    for both: the next request of the URL is one miss wherever it lands."""
    from tests.integration.test_admin_api import api

    origin, backend, port, p = two_workers(loop_thread, tmp_path)
    try:
        sent = 0
        for _ in range(10):  # new connections until each worker has answered hits
            for _ in range(20):
                get(port, "/logo.gif")
                sent += 1
            status = p.wait_status(lambda s, n=sent: s.get("caches", {}).get("web", {}).get("hits", 0) == n - 1, 10)
            if all(w.get("cache_hits", 0) > 0 for w in status["workers"]):
                break
        else:
            pytest.fail(f"one worker took every connection: {status['workers']}")
        assert origin.hits["/logo.gif"] == 1  # one fetch for the instance
        web = status["caches"]["web"]
        assert web["misses"] == 1 and web["stores"] == 1 and web["entries"] == 1 and web["bytes"] > 0
        assert web["shared"] is True
        assert list(tmp_path.glob("pyvs-cache-*/*/*"))  # its file, under cache.path
        code, text = api(p, "GET", "/metrics")
        assert code == 200 and f'pyvs_cache_hits_total{{cache="web"}} {sent - 1}' in text, text
        code, body = api(p, "POST", f"/cache/purge?url=127.0.0.1:{port}/logo.gif")
        assert code == 200 and body["ok"], body
        h, _ = get(port, "/logo.gif")
        assert "x-cache: miss" in h
        for _ in range(20):
            h, _ = get(port, "/logo.gif")
            assert "x-cache: hit" in h
        assert origin.hits["/logo.gif"] == 2
        assert api(p, "POST", "/cache/purge?url=")[0] == 400
    finally:
        p.stop()
        backend.close()
    assert not list(tmp_path.glob("pyvs-cache-*"))  # the instance's files go with it


def test_a_reload_keeps_an_unchanged_cache_and_drops_a_changed_one(loop_thread: LoopThread, tmp_path: Path) -> None:
    """A reload that keeps the cache section keeps its objects (a hit right after the
    reload, no new fetch); one that changes it starts empty, and the old section's files
    go once the old workers have."""
    import signal

    import yaml

    origin, backend, port, p = two_workers(loop_thread, tmp_path)
    try:
        assert "x-cache: miss" in get(port, "/logo.gif")[0]
        sections = list(tmp_path.glob("pyvs-cache-*/*"))
        assert len(sections) == 1
        p.proc.send_signal(signal.SIGHUP)  # the same config
        p.wait_status(lambda s: s["generation"] == 1 and all(w["ready"] for w in s["workers"]), 20)
        h, _ = get(port, "/logo.gif")
        assert "x-cache: hit" in h and origin.hits["/logo.gif"] == 1
        p.config["listeners"][0]["cache"]["size"] = "2m"
        p.path.write_text(yaml.safe_dump(p.config))
        p.proc.send_signal(signal.SIGHUP)
        p.wait_status(lambda s: s["generation"] == 2 and all(w["ready"] for w in s["workers"]), 20)
        assert "x-cache: miss" in get(port, "/logo.gif")[0] and origin.hits["/logo.gif"] == 2
        p.wait_status(lambda s: not s["retiring"] and not sections[0].exists(), 40)
        assert len(list(tmp_path.glob("pyvs-cache-*/*"))) == 1  # the new section's
    finally:
        p.stop()
        backend.close()


def test_background_revalidation_follows_the_rewritten_request(loop_thread: LoopThread, tmp_path: Path) -> None:
    """A route that rewrites the path and sets Host: the background request of
    stale-while-revalidate is the request as the route's filters left it, to the route's
    own backend (not routed again: the rewritten path would match another route)."""
    a, b = Origin(), Origin()
    be_a, be_b = RawBackend(loop_thread, a), RawBackend(loop_thread, b)
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"],
                       "cache": {"size": "1m", "max_object": "64k", "path": str(tmp_path)},
                       "routes": [{"match": {"path_prefix": "/api/"}, "backend": "a",
                                   "rewrite": {"strip_prefix": "/api"},
                                   "request_headers": {"set": {"Host": "internal.a"}}},
                                  {"backend": "b"}]}],
        "backends": [{"name": "a", "servers": [{"name": "a1", "address": be_a.address}]},
                     {"name": "b", "servers": [{"name": "b1", "address": be_b.address}]}],
    }
    (tmp_path / "run").mkdir()
    p = Pyvs(cfg, tmp_path / "run", workers=2)
    try:
        h, first = get(port, "/api/swr")
        assert "x-cache: miss" in h and a.hits == {"/swr": 1}
        h, body = get(port, "/api/swr")
        assert "x-cache: stale" in h and body == first
        loop_thread.run(wait_for(lambda: a.swr_conditional == 1))

        async def release() -> None:
            a.swr_release.set()

        loop_thread.run(release())
        for _ in range(200):
            h, body = get(port, "/api/swr")
            if "x-cache: stale" not in h:
                break
        assert "x-cache: hit" in h and body == first
        assert a.hits == {"/swr": 2} and b.hits == {}  # the revalidation went to a, as /swr
    finally:
        p.stop()
        be_a.close()
        be_b.close()


def test_a_first_miss_that_fails_does_not_hold_the_next_requests(loop_thread: LoopThread, tmp_path: Path) -> None:
    """The server is down: each request gets its 502 at once, in either worker. (The
    first miss's fetch claim goes with its exchange, not after the 5 s lock timeout.)"""
    import time

    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "be",
                       "cache": {"size": "1m", "path": str(tmp_path)}}],
        "backends": [{"name": "be", "retries": 0,
                      "servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}]}],
    }
    (tmp_path / "run").mkdir()
    p = Pyvs(cfg, tmp_path / "run", workers=2)
    try:
        started = time.monotonic()
        for _ in range(6):
            r = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/down")
            assert r.stdout == b"502"
        assert time.monotonic() - started < 4.0  # a held claim would make one of them wait 5 s
    finally:
        p.stop()


def test_workers_that_dropped_root_share_the_store(loop_thread: LoopThread, tmp_path: Path) -> None:
    """global.user: the supervisor (root) makes the directories for the workers' user;
    their objects are theirs, a hit in one worker is one in the other, and the root
    goes when pyvs exits."""
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.fail("this test drops root: the suite runs as root (make test under sudo)")
    nobody = pwd.getpwnam("nobody")
    origin = Origin()
    backend = RawBackend(loop_thread, origin)
    port = free_port()
    cfg: dict[str, Any] = {
        "global": {"user": "nobody"},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "be",
                       "cache": {"size": "1m"}}],  # the default path, /dev/shm: nobody can reach it
        "backends": [{"name": "be", "servers": [{"name": "s1", "address": backend.address}]}],
    }
    p = Pyvs(cfg, tmp_path, workers=2)
    root = Path(f"/dev/shm/pyvs-cache-{p.proc.pid}")
    try:
        for _ in range(10):
            get(port, "/logo.gif")
        assert origin.hits["/logo.gif"] == 1
        objects = [f for f in root.glob("*/*") if not f.name.startswith(".")]
        assert len(objects) == 1 and objects[0].stat().st_uid == nobody.pw_uid
        assert root.stat().st_uid == 0 and root.stat().st_mode & 0o777 == 0o711  # the supervisor's
        section = objects[0].parent.stat()
        assert section.st_uid == nobody.pw_uid and section.st_mode & 0o777 == 0o700  # the workers' own
    finally:
        p.stop()
        backend.close()
    assert not root.exists()

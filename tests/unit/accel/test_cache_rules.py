"""RFC 9111 rules of the shared cache, one test per rule, with an injected clock.

The filter is driven through a small fake exchange (request head, view, reply, body
stage) so each rule is checked without sockets; tests/integration/test_cache.py checks
the same filter end to end.
"""

from __future__ import annotations

from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from pyvs.accel.cache import CacheStore, HttpCache
from pyvs.accel.freshness import current_age, directives, lifetime, storable
from pyvs.config.accel_schema import Cache
from pyvs.http.h1 import parse_request_head, parse_response_head
from pyvs.l7.filters.base import Verdict
from pyvs.l7.request import RequestView
from tests.unit.accel.sharedkit import shared_stores

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeEx:
    """What the cache filter reads and writes of an exchange."""

    def __init__(self, raw: bytes) -> None:
        self.head = parse_request_head(raw)
        self.view = RequestView()
        self.view.reset(self.head)
        self.reply: Any = None
        self.stages: list[Any] = []
        self.add_lines: list[bytes] = []

    def stage_body(self, stage: Any) -> None:
        self.stages.append(stage)

    def variable(self, name: str) -> bytes:
        return b""


def request(cache: HttpCache, target: str = "/logo.gif", method: str = "GET", headers: str = "") -> FakeEx:
    ex = FakeEx(f"{method} {target} HTTP/1.1\r\nHost: example.com\r\n{headers}\r\n".encode())
    verdict = cache.on_request(ex)
    ex.hit = verdict == Verdict.RESPOND  # type: ignore[attr-defined]
    return ex


def respond(cache: HttpCache, ex: FakeEx, headers: str, body: bytes = b"x" * 100, status: str = "200 OK") -> None:
    rh = parse_response_head(f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode(),
                             head_request=ex.head.method == b"HEAD")
    cache.on_response(ex, rh)
    for stage in ex.stages:
        assert stage.feed(body, True) == body  # the client gets the body unchanged


def date(t: float) -> str:
    return f"Date: {formatdate(t, usegmt=True)}\r\n"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["worker", "shared"])
def cache(clock: Clock, request: pytest.FixtureRequest, tmp_path: Path) -> HttpCache:
    """Every rule holds for a worker's own store and for the store the workers share."""
    store = shared_stores(tmp_path, 1)[0] if request.param == "shared" else None
    return HttpCache(Cache(size=100_000, max_object=10_000), store=store, clock=clock)


def fill(cache: HttpCache, clock: Clock, headers: str, target: str = "/logo.gif", req: str = "") -> None:
    ex = request(cache, target, headers=req)
    assert not ex.hit  # type: ignore[attr-defined]
    respond(cache, ex, date(clock.now) + headers)


def test_fresh_hit(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: public, max-age=60\r\n")
    clock.now += 10
    ex = request(cache)
    assert ex.hit  # type: ignore[attr-defined]
    assert ex.reply.body == b"x" * 100
    assert b"X-Cache: HIT\r\n" in ex.reply.fields and b"Age: 10\r\n" in ex.reply.fields
    assert b"Content-Length" not in ex.reply.fields  # Reply.encode writes its own


def test_stale_is_not_served(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\n")
    clock.now += 61
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_s_maxage_wins_over_max_age(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=1, s-maxage=100\r\n")
    clock.now += 50
    assert request(cache).hit  # type: ignore[attr-defined]


def test_expires_minus_date(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, f"Expires: {formatdate(clock.now + 30, usegmt=True)}\r\n")
    clock.now += 20
    assert request(cache).hit  # type: ignore[attr-defined]
    clock.now += 20
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_no_explicit_freshness_is_not_stored(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, f"Last-Modified: {formatdate(clock.now - 1000, usegmt=True)}\r\n")
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_heuristic_ten_percent(clock: Clock) -> None:
    cache = HttpCache(Cache(size=100_000, max_object=10_000, heuristic=True), clock=clock)
    fill(cache, clock, f"Last-Modified: {formatdate(clock.now - 1000, usegmt=True)}\r\n")
    clock.now += 99
    assert request(cache).hit  # type: ignore[attr-defined]
    clock.now += 2
    assert not request(cache).hit  # type: ignore[attr-defined]


@pytest.mark.parametrize("cc", ["no-store, max-age=60", "private, max-age=60", "no-cache, max-age=60"])
def test_not_storable(cache: HttpCache, clock: Clock, cc: str) -> None:
    fill(cache, clock, f"Cache-Control: {cc}\r\n")
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_request_no_store_is_not_stored(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\n", req="Cache-Control: no-store\r\n")
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_authorization_needs_public(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\n", target="/a", req="Authorization: Basic eDp5\r\n")
    assert not request(cache, "/a").hit  # type: ignore[attr-defined]
    fill(cache, clock, "Cache-Control: public, max-age=60\r\n", target="/b", req="Authorization: Basic eDp5\r\n")
    assert request(cache, "/b").hit  # type: ignore[attr-defined]


def test_vary_splits_variants(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\nVary: Accept-Language\r\n", req="Accept-Language: en\r\n")
    assert request(cache, headers="Accept-Language: en\r\n").hit  # type: ignore[attr-defined]
    assert not request(cache, headers="Accept-Language: fr\r\n").hit  # type: ignore[attr-defined]
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_vary_star_never_stored(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\nVary: *\r\n")
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_request_no_cache_goes_to_the_server(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\n")
    assert not request(cache, headers="Cache-Control: no-cache\r\n").hit  # type: ignore[attr-defined]
    assert not request(cache, headers="Pragma: no-cache\r\n").hit  # type: ignore[attr-defined]
    assert not request(cache, headers="Cache-Control: max-age=0\r\n").hit  # type: ignore[attr-defined]
    clock.now += 30
    assert not request(cache, headers="Cache-Control: max-age=10\r\n").hit  # type: ignore[attr-defined]
    assert request(cache).hit  # type: ignore[attr-defined]


def test_post_invalidates_target_and_locations(cache: HttpCache, clock: Clock) -> None:
    for target in ("/logo.gif", "/a", "/b", "/other"):
        fill(cache, clock, "Cache-Control: max-age=60\r\n", target=target)
    ex = request(cache, "/logo.gif", method="POST")
    assert not ex.hit  # type: ignore[attr-defined]
    respond(cache, ex, "Location: /a\r\nContent-Location: http://example.com/b\r\n", status="201 Created")
    assert not request(cache, "/logo.gif").hit  # type: ignore[attr-defined]
    assert not request(cache, "/a").hit  # type: ignore[attr-defined]
    assert not request(cache, "/b").hit  # type: ignore[attr-defined]
    assert request(cache, "/other").hit  # type: ignore[attr-defined]


def test_other_host_location_not_invalidated(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\n", target="/a")
    ex = request(cache, "/form", method="POST")
    respond(cache, ex, "Location: http://elsewhere.example/a\r\n", status="303 See Other")
    assert request(cache, "/a").hit  # type: ignore[attr-defined]


def test_age_rfc9111_4_2_3() -> None:
    # The server's Date is 5 s before the response arrived; it said Age: 3; the
    # request took 2 s; the entry has been stored 10 s.
    age = current_age(now=T0 + 10, request_time=T0 - 2, response_time=T0, date=T0 - 5, age_value=3)
    assert age == max(5, 3 + 2) + 10
    age = current_age(now=T0 + 10, request_time=T0 - 2, response_time=T0, date=T0 - 1, age_value=30)
    assert age == 32 + 10


def test_age_header_from_upstream_counts(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, "Cache-Control: max-age=60\r\nAge: 50\r\n")
    clock.now += 5
    ex = request(cache)
    assert ex.hit and b"Age: 55\r\n" in ex.reply.fields  # type: ignore[attr-defined]
    clock.now += 6
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_memory_bound_and_lru_eviction() -> None:
    store = CacheStore(limit=3 * (1000 + 400), max_object=2000)
    clock = Clock()
    cache = HttpCache(Cache(size=4096, max_object=2000), store=store, clock=clock)
    for target in ("/1", "/2", "/3"):
        ex = request(cache, target)
        respond(cache, ex, date(clock.now) + "Cache-Control: max-age=60\r\n", body=b"y" * 1000)
    assert request(cache, "/1").hit  # type: ignore[attr-defined]  # /1 is now the most recent
    ex = request(cache, "/4")
    respond(cache, ex, date(clock.now) + "Cache-Control: max-age=60\r\n", body=b"y" * 1000)
    assert store.bytes <= store.limit and store.evictions >= 1
    assert not request(cache, "/2").hit  # type: ignore[attr-defined]  # least recently used went first
    assert request(cache, "/1").hit and request(cache, "/4").hit  # type: ignore[attr-defined]


def test_larger_than_max_object_streams_uncached(cache: HttpCache, clock: Clock) -> None:
    ex = request(cache)
    respond(cache, ex, date(clock.now) + "Cache-Control: max-age=60\r\n", body=b"z" * 20_000)
    assert not request(cache).hit  # type: ignore[attr-defined]


def test_directives_and_lifetime_helpers() -> None:
    cc = directives(b'public, Max-Age=30, s-maxage="40", no-transform')
    assert cc == {b"public": None, b"max-age": b"30", b"s-maxage": b"40", b"no-transform": None}
    assert lifetime(cc, status=200, date=T0, expires=None, last_modified=None, heuristic=False) == 40
    assert lifetime({}, status=200, date=T0, expires=b"garbage", last_modified=None, heuristic=False) == 0
    assert not storable(b"POST", 200, {}, {b"max-age": b"9"}, authorization=False, vary_star=False, fresh_for=9)
    assert not storable(b"GET", 206, {}, {b"max-age": b"9"}, authorization=False, vary_star=False, fresh_for=9)


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[Any] = []

    def call_later(self, delay: float, cb: Any, *args: Any) -> Any:
        timer = FakeTimer(cb, args)
        self.timers.append(timer)
        return timer

    def time(self) -> float:
        return 0.0


class FakeTimer:
    def __init__(self, cb: Any, args: Any) -> None:
        self.cb, self.args, self.cancelled = cb, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Waiter(FakeEx):
    """An exchange that can wait: the collapsing path needs the loop and the downstream."""

    def __init__(self, raw: bytes, loop: FakeLoop) -> None:
        super().__init__(raw)
        self.loop = loop
        self.down = type("Down", (), {"req_ended": True})()
        self.resumed = self.replied = False

    def resume_request(self) -> None:
        self.resumed = True

    def reply_now(self) -> None:
        self.replied = True


def test_concurrent_misses_wait_for_the_first(cache: HttpCache, clock: Clock) -> None:
    loop = FakeLoop()
    raw = b"GET /hot HTTP/1.1\r\nHost: example.com\r\n\r\n"
    first = Waiter(raw, loop)
    assert cache.on_request(first) == Verdict.CONTINUE
    others = [Waiter(raw, loop) for _ in range(19)]
    assert all(cache.on_request(o) == Verdict.WAIT for o in others)
    respond(cache, first, date(clock.now) + "Cache-Control: max-age=60\r\n")
    assert all(o.replied and o.reply.body == b"x" * 100 for o in others)
    assert cache.store.collapsed == 19 and loop.timers[0].cancelled


def test_waiters_go_to_the_server_when_nothing_is_stored(cache: HttpCache, clock: Clock) -> None:
    loop = FakeLoop()
    raw = b"GET /cold HTTP/1.1\r\nHost: example.com\r\n\r\n"
    first, second = Waiter(raw, loop), Waiter(raw, loop)
    cache.on_request(first)
    assert cache.on_request(second) == Verdict.WAIT
    respond(cache, first, "Cache-Control: no-store\r\n")
    assert second.resumed and not second.replied


def test_waiters_are_released_by_the_lock_timeout(cache: HttpCache, clock: Clock) -> None:
    loop = FakeLoop()
    raw = b"GET /lost HTTP/1.1\r\nHost: example.com\r\n\r\n"
    first, second = Waiter(raw, loop), Waiter(raw, loop)
    cache.on_request(first)
    cache.on_request(second)
    timer = loop.timers[0]
    timer.cb(*timer.args)  # the first request never got its response in time
    assert second.resumed


def server_answer(cache: HttpCache, ex: FakeEx, raw_head: str) -> tuple[Any, bytes]:
    """The head the client gets and the body the stages produce for ``raw_head`` (no body)."""
    rh = parse_response_head(raw_head.encode() + b"\r\n", head_request=False)
    cache.on_response(ex, rh)
    out = b""
    for stage in ex.stages:
        out = stage.feed(b"", True)
    return rh, out


def test_stale_entry_is_revalidated_and_304_refreshes_it(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, 'Cache-Control: max-age=10\r\nETag: "v1"\r\nX-Old: 1\r\n')
    clock.now += 20
    ex = request(cache)
    assert not ex.hit  # type: ignore[attr-defined]
    assert ex.add_lines == [b'If-None-Match: "v1"\r\n']  # the request to the server is conditional
    rh, body = server_answer(cache, ex, "HTTP/1.1 304 Not Modified\r\n" + date(clock.now)
                             + 'Cache-Control: max-age=100\r\nETag: "v1"\r\n')
    assert rh.status == 200 and body == b"x" * 100  # the client gets the stored response
    assert b"X-Cache: REVALIDATED" in rh.block and b"X-Old: 1" in rh.block
    assert b"max-age=100" in rh.block and b"max-age=10\r\n" not in rh.block
    clock.now += 50
    assert request(cache).hit  # type: ignore[attr-defined]  # fresh again for 100 s


def test_last_modified_validator(cache: HttpCache, clock: Clock) -> None:
    lm = formatdate(clock.now - 500, usegmt=True)
    fill(cache, clock, f"Cache-Control: max-age=10\r\nLast-Modified: {lm}\r\n")
    clock.now += 20
    ex = request(cache)
    assert ex.add_lines == [f"If-Modified-Since: {lm}\r\n".encode()]


def test_client_conditional_is_not_replaced(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, 'Cache-Control: max-age=10\r\nETag: "v1"\r\n')
    clock.now += 20
    ex = request(cache, headers='If-None-Match: "v0"\r\n')
    assert ex.add_lines == []
    rh, _ = server_answer(cache, ex, 'HTTP/1.1 304 Not Modified\r\nETag: "v0"\r\n')
    assert rh.status == 304  # the client's own 304 goes to it


def test_client_conditional_answered_304_when_fresh(cache: HttpCache, clock: Clock) -> None:
    fill(cache, clock, 'Cache-Control: max-age=60\r\nETag: "v1"\r\nContent-Type: image/gif\r\n')
    ex = request(cache, headers='If-None-Match: W/"v1"\r\n')
    assert ex.hit and ex.reply.status == 304  # type: ignore[attr-defined]
    data = ex.reply.encode(close=False)
    assert data.startswith(b"HTTP/1.1 304") and b"Content-Length" not in data and b'ETag: "v1"' in data
    assert b"Content-Type" not in data and data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("cc", "served"), [
    ("max-age=10, stale-if-error=60", True),
    ("max-age=10, stale-if-error=5", False),  # stale for 10 s: beyond the allowance
    ("max-age=10, stale-if-error=60, must-revalidate", False),
    ("max-age=10", False),
])
def test_stale_if_error(cache: HttpCache, clock: Clock, cc: str, served: bool) -> None:
    fill(cache, clock, f"Cache-Control: {cc}\r\n")
    clock.now += 20
    ex = request(cache)
    rh = parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\n", head_request=False)
    cache.on_response(ex, rh)
    if served:
        assert rh.status == 200 and b"X-Cache: STALE" in rh.block
        assert ex.stages[0].feed(b"oops", False) == b"" and ex.stages[0].feed(b"", True) == b"x" * 100
    else:
        assert rh.status == 503 and not ex.stages


def test_purge_by_url_and_prefix(cache: HttpCache, clock: Clock) -> None:
    from pyvs.accel import _STORES, parse_purge_url, purge

    assert parse_purge_url("http://Example.com/logo.gif") == ("example.com", "/logo.gif", False)
    assert parse_purge_url("example.com/img/*") == ("example.com", "/img/", True)
    with pytest.raises(ValueError, match="expected http://host/path"):
        parse_purge_url("ftp://x/y")
    for target in ("/logo.gif", "/img/a", "/img/b", "/other"):
        fill(cache, clock, "Cache-Control: max-age=60\r\n", target=target)
    _STORES[-1] = cache.store
    try:
        assert purge({"host": "example.com", "target": "/logo.gif", "prefix": False}) == 1
        assert purge({"host": "example.com", "target": "/img/", "prefix": True}) == 2
        area = getattr(cache.store, "area", None)
        if area is not None:  # a shared store: the files are the supervisor's part (Actions.cache_purge)
            from pyvs.accel.cache_files import purge_files

            assert purge_files(area, b"example.com /img/", True) == 2
    finally:
        del _STORES[-1]
    assert not request(cache, "/logo.gif").hit and not request(cache, "/img/a").hit  # type: ignore[attr-defined]
    assert request(cache, "/other").hit  # type: ignore[attr-defined]


def test_an_upgrade_is_never_answered_from_the_store(cache: HttpCache, clock: Clock) -> None:
    """A WebSocket handshake to a URL whose plain GET is stored goes to the server."""
    fill(cache, clock, "Cache-Control: public, max-age=60\r\n", target="/ws")
    assert request(cache, "/ws").hit  # type: ignore[attr-defined]
    ws = request(cache, "/ws", headers="Connection: Upgrade\r\nUpgrade: websocket\r\n")
    assert not ws.hit  # type: ignore[attr-defined]

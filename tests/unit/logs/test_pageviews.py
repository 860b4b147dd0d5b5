"""Page views: which requests count, per minute and prefix, UV across workers, top URLs."""

from __future__ import annotations

import json

from pyvs.config.log_schema import PageViewConfig
from pyvs.http.h1 import ResponseHead, parse_request_head, parse_response_head
from pyvs.logs.pageviews import PageViews, PageViewStore, prefix_of

T0 = 1_800_000_000.0  # a whole hour (and minute)


def _req(target: str, method: str = "GET") -> object:
    return parse_request_head(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def _resp(ctype: str = "text/html; charset=utf-8") -> ResponseHead:
    return parse_response_head(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: 0\r\n\r\n".encode(),
                               head_request=False)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_prefix_of() -> None:
    assert prefix_of(b"/blog/2024/x", 1) == "/blog/"
    assert prefix_of(b"/blog/2024/x", 2) == "/blog/2024/"
    assert prefix_of(b"/", 1) == "/"
    assert prefix_of(b"/about", 1) == "/about"
    assert prefix_of(b"/a/b", 0) == "/"


def test_only_get_html_2xx_non_assets_count() -> None:
    clock = Clock()
    pv = PageViews(PageViewConfig(), clock)
    pv.record("www", _req("/blog/a?x=1"), 200, _resp(), b"1.1.1.1")  # counts
    pv.record("www", _req("/blog/a", "POST"), 200, _resp(), b"1.1.1.1")  # method
    pv.record("www", _req("/app.js"), 200, _resp(), b"1.1.1.1")  # asset
    pv.record("www", _req("/IMG.PNG"), 200, _resp(), b"1.1.1.1")  # asset, any case
    pv.record("www", _req("/api"), 200, _resp("application/json"), b"1.1.1.1")  # type
    pv.record("www", _req("/gone"), 404, _resp(), b"1.1.1.1")  # status
    pv.record("www", _req("/local"), 200, None, b"1.1.1.1")  # no response head (pyvs answered)
    rep = pv.take()
    assert rep is not None
    assert rep["minutes"] == {str(int(T0)): {"www": {"/blog/": 1}}}
    assert rep["urls"] == {"www": {"/blog/a": 1}}
    assert rep["status"] == {"www": [0, 0, 6, 0, 1, 0]}  # every request's class
    assert pv.take() is None  # taken: nothing new


def test_reports_of_two_workers_add_up_and_visitors_are_not_counted_twice() -> None:
    clock = Clock()
    store = PageViewStore(top=2, clock=clock)
    workers = [PageViews(PageViewConfig(content_types=[]), clock) for _ in range(2)]
    for i in range(300):
        w = workers[i % 2]
        w.record("www", _req(f"/p{i % 3}"), 200, _resp(), b"10.0.0.%d" % (i % 100))  # 100 clients
    clock.now += 61
    workers[0].record("www", _req("/later/x"), 200, _resp(), b"10.9.9.9")
    for w in workers:
        rep = w.take()
        assert rep is not None
        store.merge(json.loads(json.dumps(rep)))  # as it travels over the channel
    clock.now += 60
    out = store.report()["vhosts"]["www"]
    assert out["pv_last_hour"] == 301
    assert out["pv_per_minute"] == [[int(T0), 300], [int(T0) + 60, 1]]
    assert out["pv_last_minute"] == 1 and out["pv_current_minute"] == 0
    assert out["pv_by_prefix_last_hour"] == {"/p0": 100, "/p1": 100, "/p2": 100, "/later/": 1}
    assert abs(out["uv_hour"] - 101) <= 3 and out["uv_day"] == out["uv_hour"]  # an estimate: ~1.6 %
    assert out["top_urls"] == [{"path": "/p0", "pv": 100}, {"path": "/p1", "pv": 100}]
    assert out["status"]["2xx"] == 301


def test_old_minutes_and_hours_expire() -> None:
    clock = Clock()
    store = PageViewStore(top=5, clock=clock)
    pv = PageViews(PageViewConfig(content_types=[]), clock)
    pv.record("www", _req("/"), 200, None, b"1")
    store.merge(pv.take() or {})
    clock.now += 2 * 3600 + 120
    pv.record("www", _req("/"), 200, None, b"2")
    store.merge(pv.take() or {})
    out = store.report()["vhosts"]["www"]
    assert out["pv_last_hour"] == 1 and out["uv_hour"] == 1
    assert len(store.minutes) == 1 and len(store.hours) == 1

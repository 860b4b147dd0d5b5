"""Fuzz: the router (pyvs/l7/router.py).

Router.compile on random valid http listeners (vhosts with server names of every kind
and local addresses, long and short route lists with every condition, language
negotiation, listener backend or not) never raises; select and explain on random
requests (any method, origin/absolute/asterisk targets, odd Hosts, HTTP/1.0 without
Host, cookies, Accept-Language, User-Agent, unparsable client and local addresses)
never raise, agree with each other, and answer a route of this router or a status.
tests/unit/test_router.py checks *which* route against a reference on a narrower
space; this module checks that nothing breaks on a wide one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from pyvs.config.schema import Listener
from pyvs.http import h1
from pyvs.http.errors import ProtocolError
from pyvs.l7.request import RequestView
from pyvs.l7.router import Router, RouteSpec

from .oracles import fuzz

SERVER_NAMES = ["a.example.com", "B.Example.com.", "*.example.com", ".example.net", "*.a.example.com", "localhost",
                "~^x\\d+\\.", "~(?i)NET$", "xn--bcher-kva.example", "[::1]", "127.0.0.1", "_", "~"]
PATHS = ["/", "/a", "/a/", "/a/b", "/api/v1/", "/%7Euser", "/a b", "*", "/é", "~^/a", "~*\\.PNG$", "~x|y", "~^$"]
PREFIXES = ["/", "/a", "/a/", "/api/", "/%", "/é/"]
VALUES: list[str | bool] = ["1", "", "yes", " x ", True, False, "~^y", "~(?i)ABC", "~.", "é"]
CIDRS = ["10.0.0.0/8", "0.0.0.0/0", "::/0", "192.0.2.1/32", "2001:db8::/32", "::ffff:0:0/96"]
LANGS = ["en", "en-US", "fr", "zh-Hant-TW", "de-CH", "zh-*"]


@st.composite
def matches(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    m: dict[str, Any] = {}
    if draw(st.booleans()):
        m["host"] = draw(st.sampled_from(SERVER_NAMES))
    kind = draw(st.sampled_from(["none", "path", "prefix", "both"]))
    if kind in ("path", "both"):
        m["path"] = draw(st.sampled_from(PATHS))
    if kind in ("prefix", "both"):
        m["path_prefix"] = draw(st.sampled_from(PREFIXES))
    if draw(st.integers(0, 3)) == 0:
        m["methods"] = draw(st.lists(st.sampled_from(["GET", "post", "M-SEARCH", "DELETE"]), min_size=1, max_size=3))
    for key, names in (("headers", ["X-A", "x-a", "Cookie", "Host", "Content-Length"]), ("query", ["q", "a b", "%41"]),
                       ("cookies", ["c", "sid"])):
        if draw(st.integers(0, 3)) == 0:
            m[key] = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(VALUES), max_size=2))
    if draw(st.integers(0, 4)) == 0:
        m["source"] = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        m["language"] = draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 5)) == 0:
        m["browser"] = draw(st.lists(st.sampled_from(["mobile", "tablet", "desktop", "bot"]), min_size=1,
                                     max_size=2, unique=True))
    if draw(st.integers(0, 5)) == 0:
        m["user_agent"] = draw(st.sampled_from(["Firefox", "~(?i)bot", "~^$"]))
    return m


@st.composite
def routes(draw: st.DrawFn, min_size: int = 0) -> list[dict[str, Any]]:
    out = []
    for m in draw(st.lists(matches(), min_size=min_size, max_size=10)):
        r: dict[str, Any] = {} if m is None else {"match": m}
        action = draw(st.sampled_from(["backend", "backend", "respond", "redirect", "deny"]))
        if action == "backend":
            r["backend"] = draw(st.sampled_from(["a", "b"]))
        elif action == "respond":
            r["respond"] = {"status": 204}
        elif action == "redirect":
            r["redirect"] = {"to": "https://$host$path$query"}
        else:
            r["deny"] = {"status": 403}
        if draw(st.integers(0, 5)) == 0:
            r["allow"] = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2))
        out.append(r)
    return out


@st.composite
def listeners(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.permutations(SERVER_NAMES))
    vhosts = []
    for i in range(draw(st.integers(0, 4))):
        k = draw(st.integers(0, 3))
        vh: dict[str, Any] = {"name": f"v{i}", "server_names": names[:k], "routes": draw(routes(min_size=1))}
        names = names[k:]
        if k == 0 or draw(st.integers(0, 2)) == 0:
            vh["default"] = True
        if draw(st.integers(0, 3)) == 0:
            vh["addresses"] = draw(st.lists(st.sampled_from(["127.0.0.1", "::1", "10.0.0.1"]), min_size=1,
                                            max_size=2, unique=True))
        vhosts.append(vh)
    listener: dict[str, Any] = {"name": "web", "bind": ["127.0.0.1:8080"], "vhosts": vhosts, "routes": draw(routes())}
    if draw(st.booleans()) or not (vhosts or listener["routes"]):
        listener["backend"] = "a"
    if draw(st.integers(0, 4)) == 0:
        listener["no_vhost_status"] = draw(st.sampled_from([404, 421]))
    return listener


HOSTS = [b"a.example.com", b"A.EXAMPLE.COM.:8080", b"x1.example.net", b"example.net", b"[::1]:80", b"[::1",
         b"localhost", b"127.0.0.1", b"", b"a..b", b"%41.example.com", b"xn--bcher-kva.example", b".",
         b"a" * 300]
TARGETS = [b"/", b"/a", b"/a/b?q=1&q=2", b"/api/v1/x", b"/%7Euser?", b"*", b"http://A.example.com/a?c",
           b"https://[::1]:8/x", b"http://h?x", b"/IMG.PNG", b"/?q", b"/a;b", b"//x", b"/\xc3\xa9/"]
IPS = [b"127.0.0.1", b"::1", b"10.0.0.1", b"192.0.2.1", b"2001:db8::5", b"::ffff:10.1.1.1", b"", b"junk",
       b"999.1.1.1", b"fe80::1%eth0"]


@st.composite
def request_views(draw: st.DrawFn) -> RequestView | None:
    method = draw(st.sampled_from([b"GET", b"POST", b"M-SEARCH", b"DELETE", b"OPTIONS", b"HEAD"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    lines = [method + b" " + draw(st.sampled_from(TARGETS)) + b" HTTP/" + version]
    if version == b"1.1" or draw(st.booleans()):
        lines.append(b"Host: " + draw(st.sampled_from(HOSTS)))
    extra = [
        b"Cookie: c=1; sid=x", b"Cookie: =; c", b"X-A: yes", b"x-a: ~^y", b"Accept-Language: fr;q=0.5, en-US",
        b"Accept-Language: *;q=0, zh-Hant", b"Accept-Language: ;;q=x", b"User-Agent: Mozilla/5.0 (iPhone) Mobile",
        b"User-Agent: Googlebot/2.1", b"Content-Length: 3", b"Transfer-Encoding: chunked", b"X-Forwarded-For: 1.2.3.4",
    ]
    lines += draw(st.lists(st.sampled_from(extra), max_size=4))
    try:
        head = h1.parse_request_head(b"\r\n".join(lines) + b"\r\n\r\n")
        if draw(st.booleans()) and not head.target.startswith(b"/"):
            h1.to_origin_form(head)  # what the connection does for an absolute-form target
    except ProtocolError:
        return None
    view = RequestView()
    view.reset(head)
    view.client_ip = draw(st.sampled_from(IPS))
    view.local_ip = draw(st.sampled_from(IPS))
    return view


@fuzz(100)
@given(listeners(), st.lists(request_views(), min_size=1, max_size=8))
def test_compile_and_select_never_raise(listener: dict[str, Any], views: list[RequestView | None]) -> None:
    try:
        lst = Listener.model_validate(listener)
    except ValidationError:
        assume(False)
        return
    assume(lst.check_routing() == [])
    router = Router.compile(lst)
    for view in views:
        if view is None:
            continue
        for _ in range(2):  # the second time from the Host cache
            got = router.select(view)
            if isinstance(got, int):
                assert got in (lst.no_vhost_status, 503)
            else:
                assert isinstance(got, RouteSpec) and router.routes[got.index] is got
            explained = router.explain(view)
            assert explained.route is (got if isinstance(got, RouteSpec) else None), (explained, got)
            if isinstance(got, int):
                assert explained.status == got

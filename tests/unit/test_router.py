"""The compiled router: vhost selection, every condition, language negotiation, explain.

The property test at the end compares the compiled router (host index, path index, raw
Host cache, inline checks) with a reference matcher written as plainly as possible
from the documented rules; the other tests pin each rule with a readable example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.schema import Config, Listener
from pyvs.http.h1 import parse_request_head
from pyvs.l7.request import RequestView
from pyvs.l7.router import Router, RouteSpec

BACKENDS = [{"name": n, "servers": [{"name": "s", "address": "127.0.0.1:9001"}]} for n in "abcdefgh"]
BACKENDS += [{"name": n, "servers": [{"name": "s", "address": "127.0.0.1:9001"}]} for n in ("zh", "en", "other")]


def compile_listener(**listener: Any) -> Router:
    """A router for one http listener given as keyword arguments (validated in full)."""
    data = {"name": "web", "bind": ["127.0.0.1:8080"], **listener}
    cfg = Config.model_validate({"listeners": [data], "backends": BACKENDS})
    return Router.compile(cfg.listeners[0])


def request(
    target: str = "/",
    host: str | None = "www.example.com",
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    client: str = "192.0.2.1",
    local: str = "127.0.0.1",
) -> RequestView:
    lines = [f"{method} {target} HTTP/{'1.1' if host is not None else '1.0'}"]  # 1.1 requires a Host
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    head = parse_request_head(("\r\n".join(lines) + "\r\n\r\n").encode())
    view = RequestView()
    view.reset(head)
    view.client_ip = client.encode()
    view.local_ip = local.encode()
    return view


def pick(router: Router, *args: Any, **kwargs: Any) -> str | int:
    """The chosen route's name (or the status), checking that explain agrees with select."""
    selected = router.select(request(*args, **kwargs))
    explained = router.explain(request(*args, **kwargs))
    if isinstance(selected, int):
        assert explained.route is None and explained.status == selected
        return selected
    assert explained.route is selected
    return selected.name


def named(*routes: dict[str, Any]) -> list[dict[str, Any]]:
    """Routes named r0, r1, ... (so assertions read as route positions)."""
    return [{"name": f"r{i}", **r} for i, r in enumerate(routes)]


# ---------------------------------------------------------------- backward compatibility


def test_host_path_prefix_and_listener_backend_work_as_before() -> None:
    r = compile_listener(
        routes=named(
            {"match": {"host": "API.example.com.", "path_prefix": "/v1/"}, "backend": "a"},
            {"match": {"path": "/healthz"}, "backend": "b"},
        ),
        backend="c",
    )
    assert pick(r, "/v1/users", host="api.example.com:8080") == "r0"
    assert pick(r, "/v1/users", host="api.example.com.") == "r0"
    assert pick(r, "/v2/users", host="api.example.com") == "web/backend"
    assert pick(r, "/healthz?x=1", host="other") == "r1"
    assert pick(r, "/healthz/", host="other") == "web/backend"
    assert not r.trivial


def test_no_match_and_no_backend_is_503() -> None:
    r = compile_listener(routes=named({"match": {"path": "/x"}, "backend": "a"}))
    assert pick(r, "/y") == 503


def test_specs_are_indexed_and_named_in_config_order() -> None:
    r = compile_listener(
        vhosts=[
            {"server_names": ["www.example.com"],
             "routes": [{"match": {"path": "/a"}, "backend": "a"}, {"backend": "b"}]},
            {"server_names": ["~^x"], "name": "xs", "routes": [{"name": "mine", "respond": {"status": 204}}]},
        ],
        routes=[{"match": {"path": "/z"}, "backend": "c"}],
        backend="d",
    )
    got = [(s.index, s.name, s.vhost, s.where, s.action, s.backend) for s in r.routes]
    assert got == [
        (0, "www.example.com/0", "www.example.com", "vhosts[0].routes[0]", "backend", "a"),
        (1, "www.example.com/1", "www.example.com", "vhosts[0].routes[1]", "backend", "b"),
        (2, "mine", "xs", "vhosts[1].routes[0]", "respond", None),
        (3, "web/0", None, "routes[0]", "backend", "c"),
        (4, "web/backend", None, "backend", "backend", "d"),
    ]
    assert all(isinstance(s, RouteSpec) for s in r.routes)


@pytest.mark.parametrize(
    ("listener", "trivial"),
    [
        ({"backend": "a"}, True),
        ({"routes": [{"backend": "a"}]}, True),
        ({"routes": [{"match": {}, "backend": "a"}], "backend": "b"}, True),
        ({"routes": [{"match": {"path": "/x"}, "backend": "a"}], "backend": "b"}, False),
        ({"vhosts": [{"default": True, "routes": [{"backend": "a"}]}]}, False),
    ],
)
def test_trivial(listener: dict[str, Any], trivial: bool) -> None:
    r = compile_listener(**listener)
    assert r.trivial is trivial
    assert (r.fixed is r.routes[0]) if trivial else r.fixed is None


# ---------------------------------------------------------------- vhost selection


def vhost_router(**listener: Any) -> Router:
    return compile_listener(
        vhosts=[
            {"name": "exact", "server_names": ["www.example.com"], "routes": [{"backend": "a"}]},
            {"name": "wild", "server_names": ["*.example.com"], "routes": [{"backend": "b"}]},
            {"name": "longer", "server_names": ["*.shop.example.com"], "routes": [{"backend": "c"}]},
            {"name": "dotted", "server_names": [".example.org"], "routes": [{"backend": "d"}]},
            {"name": "re1", "server_names": ["~^img[0-9]+\\."], "routes": [{"backend": "e"}]},
            {"name": "re2", "server_names": ["~^img"], "routes": [{"backend": "f"}]},
            *listener.pop("extra_vhosts", []),
        ],
        **listener,
    )


@pytest.mark.parametrize(
    ("host", "vhost", "why", "server_name"),
    [
        ("www.example.com", "exact", "exact", "www.example.com"),
        ("WWW.Example.COM.:8443", "exact", "exact", "www.example.com"),
        ("a.example.com", "wild", "wildcard", "*.example.com"),
        ("a.b.example.com", "wild", "wildcard", "*.example.com"),
        ("x.shop.example.com", "longer", "wildcard", "*.shop.example.com"),
        ("shop.example.com", "wild", "wildcard", "*.example.com"),
        ("example.org", "dotted", "wildcard", ".example.org"),
        ("a.example.org", "dotted", "wildcard", ".example.org"),
        ("img12.cdn.net", "re1", "regex", "~^img[0-9]+\\."),
        ("imgx.cdn.net", "re2", "regex", "~^img"),
        ("img1.example.com", "wild", "wildcard", "*.example.com"),  # wildcards before regexes
    ],
)
def test_vhost_order(host: str, vhost: str, why: str, server_name: str) -> None:
    r = vhost_router()
    e = r.explain(request(host=host))
    assert (e.vhost, e.why, e.server_name) == (vhost, why, server_name)
    selected = r.select(request(host=host))
    assert isinstance(selected, RouteSpec) and selected.vhost == vhost


def test_example_com_itself_is_not_a_subdomain() -> None:
    r = vhost_router()
    assert r.explain(request(host="example.com")).why == "none"
    assert pick(r, host="example.com") == 421


def test_default_then_fallback_then_nothing() -> None:
    assert pick(vhost_router(no_vhost_status=404), host="nope") == 404
    assert pick(vhost_router(), host=None) == 421
    with_fallback = vhost_router(routes=[{"name": "fb", "match": {"path": "/fb"}, "backend": "a"}], backend="b")
    assert pick(with_fallback, "/fb", host="nope") == "fb"
    assert pick(with_fallback, "/x", host="nope") == "web/backend"
    assert with_fallback.explain(request(host="nope")).why == "fallback"
    with_default = vhost_router(
        extra_vhosts=[{"name": "dflt", "default": True, "routes": [{"name": "d0", "backend": "g"}]}], backend="b"
    )
    assert pick(with_default, host="nope") == "d0"
    assert with_default.explain(request(host="nope")).why == "default"


def test_a_vhost_without_a_matching_route_is_503_not_the_fallback() -> None:
    r = compile_listener(
        vhosts=[{"server_names": ["www.example.com"], "routes": [{"match": {"path": "/only"}, "backend": "a"}]}],
        backend="b",
    )
    assert pick(r, "/other") == 503


def test_empty_server_name_is_a_request_without_host() -> None:
    r = compile_listener(vhosts=[{"name": "nohost", "server_names": [""], "routes": [{"name": "n", "backend": "a"}]}])
    assert pick(r, host=None) == "n"
    assert pick(r, host="x") == 421


def test_addresses_limit_a_vhost_to_local_ips() -> None:
    r = compile_listener(
        vhosts=[
            {"name": "inner", "server_names": ["www.example.com"], "addresses": ["10.0.0.1"],
             "routes": [{"name": "in", "backend": "a"}]},
            {"name": "outer", "server_names": ["www.example.com"], "addresses": ["10.0.0.2", "::1"],
             "routes": [{"name": "out", "backend": "b"}]},
            {"name": "d-any", "default": True, "routes": [{"name": "any", "backend": "c"}]},
            {"name": "d-inner", "default": True, "addresses": ["10.0.0.1"],
             "routes": [{"name": "dinner", "backend": "d"}]},
        ]
    )
    assert pick(r, local="10.0.0.1") == "in"
    assert pick(r, local="::ffff:10.0.0.1") == "in"  # a dual-stack socket's view of IPv4
    assert pick(r, local="10.0.0.2") == "out"
    assert pick(r, local="::1") == "out"
    assert pick(r, local="10.0.0.3") == "any"
    # The default for this very address beats the default for any address.
    assert pick(r, host="nope", local="10.0.0.1") == "dinner"
    assert pick(r, host="nope", local="10.0.0.2") == "any"


def test_unknown_hosts_are_cached_but_bounded() -> None:
    r = vhost_router(backend="h")
    for i in range(3000):
        assert pick(r, host=f"h{i}.example.net") == "web/backend"
    site = r._site
    assert site is not None and 0 < len(site.hits) <= 1024
    assert pick(r, host="a.example.com") == "wild/0"


# ---------------------------------------------------------------- conditions


def one(match: dict[str, Any]) -> Router:
    """A router whose route "hit" has ``match`` and whose fallback is "miss"."""
    return compile_listener(routes=[{"name": "hit", "match": match, "backend": "a"}, {"name": "miss", "backend": "b"}])


def hits(router: Router, *args: Any, **kwargs: Any) -> bool:
    return pick(router, *args, **kwargs) == "hit"


def test_route_host_forms() -> None:
    assert hits(one({"host": "*.example.com"}), host="a.example.com")
    assert not hits(one({"host": "*.example.com"}), host="example.com")
    assert hits(one({"host": ".example.com"}), host="example.com")
    assert hits(one({"host": "~^api[0-9]\\."}), host="API7.example.com")  # the Host is lower-cased first


def test_path_exact_regex_and_prefix() -> None:
    assert hits(one({"path": "/a/b"}), "/a/b?q=1")
    assert not hits(one({"path": "/a/b"}), "/a/b/")
    r = one({"path": "~^/items/[0-9]+$"})
    assert hits(r, "/items/12?x") and not hits(r, "/items/12a") and not hits(r, "/ITEMS/12")
    assert hits(one({"path": "~*^/items/"}), "/ITEMS/12")
    assert hits(one({"path": "~\\.php$"}), "/x/index.php")  # searched, not anchored
    assert hits(one({"path_prefix": "/api"}), "/apiary")
    assert not hits(one({"path_prefix": "/api/"}), "/api")


def test_path_is_raw_not_decoded() -> None:
    assert not hits(one({"path": "/a b"}), "/a%20b")
    assert hits(one({"path": "/a%20b"}), "/a%20b")
    assert not hits(one({"path_prefix": "/admin/"}), "/%61dmin/")


def test_absolute_form_target_routes_on_its_path() -> None:
    assert hits(one({"path_prefix": "/v1/"}), "http://www.example.com/v1/x")


def test_methods() -> None:
    r = one({"methods": ["get", "HEAD"]})
    assert hits(r, method="GET") and hits(r, method="HEAD") and not hits(r, method="POST")


def test_headers() -> None:
    r = one({"headers": {"X-Env": "prod", "x-debug": True, "X-Internal": False, "User-Agent": "~Mobile"}})
    ok = (("x-env", " prod "), ("X-DEBUG", ""), ("User-Agent", "Foo Mobile/1"))
    assert hits(r, headers=ok)
    assert not hits(r, headers=(("X-Env", "Prod"), *ok[1:]))  # values are case-sensitive
    assert not hits(r, headers=ok[1:])  # X-Env absent
    assert not hits(r, headers=ok[:1] + ok[2:])  # X-Debug absent
    assert not hits(r, headers=(*ok, ("X-Internal", "1")))  # must be absent
    assert not hits(r, headers=(*ok[:2], ("User-Agent", "Desktop")))
    # Repeated fields are one value joined by ", " (RFC 9110 5.3).
    assert hits(one({"headers": {"X-A": "1, 2"}}), headers=(("X-A", "1"), ("X-A", "2")))


def test_numbers_in_yaml_are_text() -> None:
    text = (
        "listeners:\n  - name: web\n    bind: ['127.0.0.1:8080']\n    routes:\n"
        "      - {name: hit, match: {cookies: {beta: 1}, query: {v: 2.5}}, backend: a}\n"
        "    backend: b\n"
        "backends: [{name: a, servers: [{name: s, address: '127.0.0.1:1'}]},"
        " {name: b, servers: [{name: s, address: '127.0.0.1:1'}]}]\n"
    )
    r = Router.compile(load_text(text).listeners[0])
    assert hits(r, "/?v=2.5", headers=(("Cookie", "beta=1"),))
    assert not hits(r, "/?v=2.5", headers=(("Cookie", "beta=true"),))


def test_query() -> None:
    r = one({"query": {"lang": "zh", "debug": True, "legacy": False, "id": "~^[0-9]+$"}})
    assert hits(r, "/?lang=zh&debug&id=42")
    assert not hits(r, "/?lang=zh&id=42")  # debug absent
    assert not hits(r, "/?lang=zh&debug=1&id=42&legacy=1")
    assert not hits(r, "/?lang=zh&debug=1&id=4x")
    assert hits(r, "/?lang=zh&lang=en&debug=1&id=1")  # the first value counts
    assert not hits(one({"query": {"q": "a b"}}), "/?q=a%20b")  # raw, not decoded


def test_cookies() -> None:
    r = one({"cookies": {"beta": "1", "session": True, "old": False}})
    assert hits(r, headers=(("Cookie", "session=abc; beta=1"),))
    assert not hits(r, headers=(("Cookie", "session=abc; beta=2"),))
    assert not hits(r, headers=(("Cookie", "beta=1"),))
    assert not hits(r, headers=(("Cookie", "beta=1; session=x; old=1"),))
    assert hits(one({"cookies": {"ab": "~^b"}}), headers=(("Cookie", "x=1"), ("Cookie", "ab=bucket")))


def test_source() -> None:
    r = one({"source": ["192.0.2.0/24", "2001:db8::/32"]})
    assert hits(r, client="192.0.2.77") and hits(r, client="2001:db8::5") and hits(r, client="::ffff:192.0.2.1")
    assert not hits(r, client="198.51.100.1") and not hits(r, client="") and not hits(r, client="garbage")


def test_user_agent_and_browser() -> None:
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"
    ipad = "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    r = compile_listener(
        routes=[
            {"name": "m", "match": {"browser": "mobile"}, "backend": "a"},
            {"name": "t-or-bot", "match": {"browser": ["tablet", "bot"]}, "backend": "b"},
            {"name": "ua", "match": {"user_agent": "Chrome/1[0-9]{2}"}, "backend": "c"},
        ],
        backend="d",
    )
    ua = "User-Agent"
    assert pick(r, headers=((ua, iphone),)) == "m"
    assert pick(r, headers=((ua, ipad),)) == "t-or-bot"
    assert pick(r, headers=((ua, google),)) == "t-or-bot"
    assert pick(r, headers=((ua, chrome),)) == "ua"
    assert pick(r, headers=((ua, chrome.replace("Chrome/120", "Chrome/99")),)) == "web/backend"
    assert hits(one({"user_agent": "~*curl"}), headers=((ua, "CURL/8"),))
    assert not hits(one({"user_agent": "~x"}))  # no User-Agent: a user_agent condition fails


# ---------------------------------------------------------------- language negotiation


def lang_router(*extra: dict[str, Any]) -> Router:
    return compile_listener(
        vhosts=[
            {
                "server_names": ["www.example.com"],
                "routes": [
                    {"name": "zh", "match": {"language": ["zh", "zh-*"]}, "backend": "zh"},
                    {"name": "en", "match": {"language": ["en"]}, "backend": "en"},
                    *extra,
                    {"name": "other", "backend": "other"},
                ],
            }
        ]
    )


@pytest.mark.parametrize(
    ("accept_language", "route"),
    [
        ("fr, zh;q=0.8, en;q=0.5", "zh"),
        ("zh-CN,zh;q=0.9", "zh"),
        ("zh-TW", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("en;q=0.5, zh;q=0.4", "en"),
        ("de", "other"),
        ("zh;q=0", "other"),
        ("zh;q=0, en;q=0.1", "en"),
        ("*", "zh"),
        (None, "other"),
    ],
)
def test_language(accept_language: str | None, route: str) -> None:
    headers = (("Accept-Language", accept_language),) if accept_language is not None else ()
    assert pick(lang_router(), headers=headers) == route


def test_language_client_range_matches_a_longer_offer() -> None:
    r = lang_router({"name": "pt-br", "match": {"language": ["pt-BR"]}, "backend": "a"})
    assert pick(r, headers=(("Accept-Language", "pt"),)) == "pt-br"
    assert pick(r, headers=(("Accept-Language", "pt-PT"),)) == "other"


def test_language_condition_with_others_falls_through() -> None:
    r = compile_listener(
        routes=[
            {"name": "zh-api", "match": {"language": ["zh"], "path_prefix": "/api/"}, "backend": "a"},
            {"name": "en", "match": {"language": ["en"]}, "backend": "b"},
        ],
        backend="c",
    )
    zh = (("Accept-Language", "zh, en;q=0.5"),)
    assert pick(r, "/api/x", headers=zh) == "zh-api"
    # zh wins the negotiation but its route wants /api/: en's route does not match either
    # (the client prefers zh), so the request falls through to the default.
    assert pick(r, "/x", headers=zh) == "web/backend"


def test_language_is_negotiated_per_request() -> None:
    r = lang_router()
    for al, route in [("zh", "zh"), ("en", "en"), ("zh", "zh")] * 3:
        assert pick(r, headers=(("Accept-Language", al),)) == route


# ---------------------------------------------------------------- long lists (path index)


def test_long_lists_use_the_path_index_without_changing_answers() -> None:
    routes = [{"name": f"p{i}", "match": {"path_prefix": f"/p{i}/"}, "backend": "a"} for i in range(10)]
    routes += [
        {"name": "exact", "match": {"path": "/p3/x"}, "backend": "b"},
        {"name": "partial", "match": {"path_prefix": "/p1"}, "backend": "c"},  # also /p10, /p1x
        {"name": "re", "match": {"path": "~^/r/"}, "backend": "d"},
    ]
    r = compile_listener(routes=routes, backend="e")
    assert pick(r, "/p3/x") == "p3"
    assert pick(r, "/p7/") == "p7"
    assert pick(r, "/p10/") == "partial"
    assert pick(r, "/p1x") == "partial"
    assert pick(r, "/r/1") == "re"
    assert pick(r, "/") == "web/backend"
    assert pick(r, "/p7") == "web/backend"


def test_benchmark_table_routes_to_the_regex_route() -> None:
    routes = [{"match": {"host": f"h{i}.example.com", "path_prefix": f"/p{i}/"}, "backend": "a"} for i in range(50)]
    routes.append({"name": "last", "match": {"host": "real.example.com", "path": "~^/items/[0-9]+$"}, "backend": "b"})
    r = compile_listener(routes=routes)
    assert pick(r, "/items/42", host="real.example.com") == "last"
    assert pick(r, "/p7/x", host="h7.example.com") == "web/7"
    assert pick(r, "/p7/x", host="h8.example.com") == 503


# ---------------------------------------------------------------- access lists


def test_access_levels() -> None:
    r = compile_listener(
        allow=["10.0.0.0/8"],
        vhosts=[
            {
                "server_names": ["www.example.com"],
                "deny": ["10.9.0.0/16"],
                "routes": [
                    {"name": "open", "match": {"path": "/open"}, "backend": "a"},
                    {"name": "lan", "match": {"path": "/lan"}, "allow": ["10.1.0.0/16"], "backend": "a"},
                    {"name": "gone", "match": {"path": "/gone"}, "deny": {"status": 410}},
                    {"name": "not-x", "deny": {"source": ["10.2.0.0/16"], "status": 404}, "backend": "b"},
                ],
            }
        ],
    )
    assert r.access is not None and r.access.check(b"192.0.2.1") == 403 and r.access.check(b"10.1.1.1") == 0
    by = {s.name: s for s in r.routes}
    assert by["open"].access is not None and by["open"].access.check(b"10.9.1.1") == 403
    assert by["open"].access.check(b"10.1.1.1") == 0
    assert by["lan"].access is not None and by["lan"].access.check(b"10.3.1.1") == 403
    assert by["gone"].action == "deny" and by["gone"].config.deny is not None
    assert by["not-x"].action == "backend"
    assert by["not-x"].access is not None and by["not-x"].access.check(b"10.2.3.4") == 404
    assert compile_listener(backend="a").routes[0].access is None


# ---------------------------------------------------------------- explain


def test_explain_lists_tried_routes_with_the_first_failed_condition() -> None:
    r = compile_listener(
        vhosts=[
            {
                "server_names": ["www.example.com"],
                "routes": [
                    {"name": "api", "match": {"path_prefix": "/api/"}, "backend": "a"},
                    {"name": "post", "match": {"methods": ["POST"], "path": "/x"}, "backend": "b"},
                    {"name": "beta", "match": {"path": "/x", "cookies": {"beta": "1"}}, "backend": "c"},
                    {"name": "web", "match": {"path": "~^/", "headers": {"X-A": True}}, "backend": "d"},
                ],
            }
        ]
    )
    e = r.explain(request("/x", headers=(("X-A", "1"), ("Cookie", "beta=2"))))
    assert (e.vhost, e.why, e.server_name, e.status) == ("www.example.com", "exact", "www.example.com", None)
    assert [(t.route.name, t.failed) for t in e.tried] == [
        ("api", "path_prefix /api/ (path is /x)"),
        ("post", "methods POST (method is GET)"),
        ("beta", "cookie beta '1' (beta is '2')"),
    ]
    assert e.route is not None and e.route.name == "web"
    assert e.matched == ("path ~^/", "header X-A present")
    nothing = r.explain(request("/x", host="elsewhere"))
    assert (nothing.vhost, nothing.why, nothing.route, nothing.status) == (None, "none", None, 421)


def test_explain_language_and_source_texts() -> None:
    r = compile_listener(
        routes=[
            {"name": "zh", "match": {"language": ["zh"]}, "backend": "a"},
            {"name": "lan", "match": {"source": ["10.0.0.0/8"]}, "backend": "b"},
        ]
    )
    e = r.explain(request(headers=(("Accept-Language", "de"),)))
    assert [t.failed for t in e.tried] == [
        "language zh (no offered language is acceptable to 'de')",
        "source 10.0.0.0/8 (client is 192.0.2.1)",
    ]
    assert e.status == 503


# ---------------------------------------------------------------- errors reach pyvs check


def test_route_config_errors_surface_through_the_loader() -> None:
    with pytest.raises(ConfigError):
        load_text("listeners: [{name: w, bind: ['127.0.0.1:1'], routes: [{match: {path: '~('}, backend: a}]}]\n")


# ---------------------------------------------------------------- property: router == reference

HOSTS = ["a.example.com", "b.example.com", "x.a.example.com", "example.com", "other.net", ""]
PATHS = ["/", "/a", "/a/", "/a/b", "/ab", "/b/c", "/api/v1", "/p1/", "/p10/"]
NAMES = ["X-A", "X-B"]
VALUES = ["1", "2", "yes"]
PREFIXES = ["/", "/a", "/a/", "/api/", "/p1", "/p1/", "/b/"]
SERVER_NAMES = ["a.example.com", "b.example.com", "*.example.com", ".example.com", "*.a.example.com", "other.net",
                "~^x\\.", "~net$"]
CIDRS = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
CLIENTS = ["10.1.2.3", "192.0.2.9", "198.51.100.1", "2001:db8::1"]


@st.composite
def matches(draw: st.DrawFn) -> dict[str, Any] | None:
    m: dict[str, Any] = {}
    if draw(st.booleans()):
        m["host"] = draw(st.sampled_from(["a.example.com", "b.example.com", "*.example.com", ".example.com", "~^x"]))
    kind = draw(st.sampled_from(["none", "path", "regex", "prefix"]))
    if kind == "path":
        m["path"] = draw(st.sampled_from(PATHS))
    elif kind == "regex":
        m["path"] = draw(st.sampled_from(["~^/a", "~b$", "~*^/API/"]))
    elif kind == "prefix":
        m["path_prefix"] = draw(st.sampled_from(PREFIXES))
    if draw(st.integers(0, 4)) == 0:
        m["methods"] = draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        m["headers"] = draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from([*VALUES, True, False, "~^y"]),
                                            max_size=2))
    if draw(st.integers(0, 3)) == 0:
        m["query"] = draw(st.dictionaries(st.sampled_from(["q", "r"]), st.sampled_from([*VALUES, True, False]),
                                          max_size=2))
    if draw(st.integers(0, 4)) == 0:
        m["cookies"] = draw(st.dictionaries(st.sampled_from(["c"]), st.sampled_from([*VALUES, True, False]),
                                            max_size=1))
    if draw(st.integers(0, 4)) == 0:
        m["source"] = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2))
    if m:
        return m
    empty_match: bool = draw(st.booleans())  # `match: {}` and no match are both unconditional
    return m if empty_match else None


@st.composite
def route_lists(draw: st.DrawFn, min_size: int = 0) -> list[dict[str, Any]]:
    # Up to 12 routes, so that long lists (the path index) are exercised too.
    ms = draw(st.lists(matches(), min_size=min_size, max_size=12))
    return [{"backend": "a", **({"match": m} if m is not None else {})} for m in ms]


@st.composite
def listeners(draw: st.DrawFn) -> dict[str, Any]:
    # *.example.com and .example.com are the same wildcard: one vhost may have it.
    seen: set[str] = set()
    names = []
    for name in draw(st.permutations(SERVER_NAMES)):
        key = name.removeprefix("*").removeprefix(".") if name.startswith(("*.", ".")) else "=" + name
        if key not in seen:
            seen.add(key)
            names.append(name)
    vhosts = []
    default_taken = False
    for i in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, 2))
        server_names, names = list(names[:k]), names[k:]
        default = not default_taken and draw(st.booleans())
        if not server_names and not default:
            continue
        default_taken = default_taken or default
        vhosts.append({"name": f"v{i}", "server_names": server_names, "default": default,
                       "routes": draw(route_lists(min_size=1))})
    listener: dict[str, Any] = {"vhosts": vhosts, "routes": draw(route_lists())}
    if draw(st.booleans()) or not (vhosts or listener["routes"]):
        listener["backend"] = "b"
    return listener


@dataclass
class Req:
    method: str
    host: str
    path: str
    query: list[tuple[str, str | None]]
    headers: list[tuple[str, str]]
    cookies: list[tuple[str, str]] = field(default_factory=list)
    client: str = "10.1.2.3"

    def target(self) -> str:
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(k if v is None else f"{k}={v}" for k, v in self.query)

    def view(self) -> RequestView:
        headers = list(self.headers)
        if self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies)))
        return request(self.target(), host=self.host, method=self.method, headers=tuple(headers), client=self.client)


@st.composite
def requests(draw: st.DrawFn) -> Req:
    host = draw(st.sampled_from(HOSTS))
    if draw(st.booleans()):
        host = host.upper() + draw(st.sampled_from(["", ":8080"]))
    return Req(
        method=draw(st.sampled_from(["GET", "POST"])),
        host=host,
        path=draw(st.sampled_from(PATHS)),
        query=draw(st.lists(st.tuples(st.sampled_from(["q", "r"]), st.sampled_from([*VALUES, None])), max_size=3)),
        headers=draw(st.lists(st.tuples(st.sampled_from([*NAMES, "x-a"]), st.sampled_from([*VALUES, "yo"])),
                              max_size=3)),
        cookies=draw(st.lists(st.tuples(st.just("c"), st.sampled_from(VALUES)), max_size=1)),
        client=draw(st.sampled_from(CLIENTS)),
    )


def host_matches(pattern: str, host: str) -> bool:
    """A server name or route host against a normalised host, as documented."""
    if pattern.startswith("~"):
        return re.search(pattern[1:], host) is not None
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def value_ok(expected: str | bool, actual: str | None) -> bool:
    if expected is True:
        return actual is not None
    if expected is False:
        return actual is None
    assert isinstance(expected, str)
    if expected.startswith("~"):
        return actual is not None and re.search(expected[1:], actual) is not None
    return actual == expected


def reference_route(m: dict[str, Any] | None, req: Req, host: str) -> bool:
    """Does a route with match ``m`` take ``req``? Every condition spelled out."""
    import ipaddress

    if not m:
        return True
    if "host" in m and not host_matches(m["host"], host):
        return False
    path = m.get("path")
    if path is not None:
        if path.startswith("~*"):
            if re.search(path[2:], req.path, re.IGNORECASE) is None:
                return False
        elif path.startswith("~"):
            if re.search(path[1:], req.path) is None:
                return False
        elif path != req.path:
            return False
    if "path_prefix" in m and not req.path.startswith(m["path_prefix"]):
        return False
    if "methods" in m and req.method not in m["methods"]:
        return False
    for name, expected in m.get("headers", {}).items():
        values = [v for k, v in req.headers if k.lower() == name.lower()]
        if not value_ok(expected, ", ".join(values) if values else None):
            return False
    for name, expected in m.get("query", {}).items():
        first = next(("" if v is None else v for k, v in req.query if k == name), None)
        if not value_ok(expected, first):
            return False
    for name, expected in m.get("cookies", {}).items():
        first = next((v for k, v in req.cookies if k == name), None)
        if not value_ok(expected, first):
            return False
    if "source" in m:
        addr = ipaddress.ip_address(req.client)
        if not any(addr.version == n.version and addr in n for n in map(ipaddress.ip_network, m["source"])):
            return False
    return True


def reference(listener: dict[str, Any], req: Req) -> tuple[str | None, int] | int:
    """(vhost name or None for the fallback, index of the route in its list), or a status."""
    host = req.host.lower().split(":")[0]
    vhosts = listener["vhosts"]
    chosen = next((v for v in vhosts if host in v["server_names"]), None)
    if chosen is None:
        best = -1
        for v in vhosts:
            for name in v["server_names"]:
                if not name.startswith("~") and name != host and host_matches(name, host) and len(name) > best:
                    chosen, best = v, len(name)
    if chosen is None:
        chosen = next((v for v in vhosts for n in v["server_names"] if n.startswith("~") and host_matches(n, host)),
                      None)
    if chosen is None:
        chosen = next((v for v in vhosts if v["default"]), None)
    if chosen is not None:
        routes, label = chosen["routes"], chosen["name"]
    else:
        routes = list(listener["routes"])
        if "backend" in listener:
            routes.append({"backend": listener["backend"]})
        if not routes:
            return 421
        label = None
    for i, r in enumerate(routes):
        if reference_route(r.get("match"), req, host):
            return label, i
    return 503


@settings(derandomize=True, max_examples=120, deadline=None)
@given(listener=listeners(), reqs=st.lists(requests(), min_size=1, max_size=6))
def test_router_agrees_with_the_reference(listener: dict[str, Any], reqs: list[Req]) -> None:
    # The listener alone (no backends to validate) keeps this test fast; the rules
    # across vhosts still run.
    lst = Listener.model_validate({"name": "web", "bind": ["127.0.0.1:8080"], **listener})
    assert lst.check_routing() == []
    router = Router.compile(lst)
    for req in reqs:
        expected = reference(listener, req)
        got = router.select(req.view())
        event(f"status {got}" if isinstance(got, int) else "vhost route" if got.vhost else "fallback route")
        assert router.explain(req.view()).route is (got if isinstance(got, RouteSpec) else None)
        if isinstance(got, int):
            assert got == expected, req
        else:
            assert isinstance(expected, tuple), (req, got)
            vhost, i = expected
            if vhost is None:
                where = f"routes[{i}]"
            else:
                position = [v["name"] for v in listener["vhosts"]].index(vhost)
                where = f"vhosts[{position}].routes[{i}]"
            if vhost is None and i == len(listener["routes"]):
                where = "backend"
            assert got.where == where, req

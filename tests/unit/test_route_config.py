"""Content-routing keys in the config: what loads, how it is normalised, and the exact
``path: reason`` text ``pyvs check`` prints for each mistake (the user-facing contract)."""

from __future__ import annotations

import asyncio
import re

import pytest

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.route_schema import Deny, compile_pattern, server_name_kind
from pyvs.config.schema import Config

BACKENDS = """\
backends:
  - {name: app, servers: [{name: a1, address: "127.0.0.1:9001"}]}
  - {name: api, servers: [{name: b1, address: "127.0.0.1:9002"}]}
"""


def listener(body: str) -> str:
    """A config with one http listener whose extra lines are ``body`` (indented 4)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return 'listeners:\n  - name: web\n    bind: ["127.0.0.1:8080"]\n' + lines + BACKENDS


def load(body: str) -> Config:
    return load_text(listener(body))


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(body)
    return info.value.problems


# ---------------------------------------------------------------- what loads


def test_old_route_form_loads_unchanged() -> None:
    cfg = load("routes:\n  - {match: {host: api.example.com, path_prefix: /v1/}, backend: api}\n  - backend: app")
    r0, r1 = cfg.listeners[0].routes
    assert r0.match is not None
    assert (r0.match.host, r0.match.path_prefix, r0.backend) == ("api.example.com", "/v1/", "api")
    assert r0.action == "backend" and r1.match is None and r1.backend == "app"


def test_full_vhost_loads_and_is_normalised() -> None:
    cfg = load(
        """
vhosts:
  - server_names: ["WWW.Example.COM.", "*.Example.com", "~^shop[0-9]+\\\\.example\\\\.com$"]
    default: true
    addresses: ["::1", "127.0.0.1"]
    allow: [10.0.0.0/8]
    routes:
      - match:
          path_prefix: /api/
          methods: [get, Post]
          headers: {X-Env: prod, X-Debug: true, User-Agent: "~Mobile"}
          query: {lang: zh}
          cookies: {beta: "1"}
          source: ["192.0.2.0/24"]
          language: [ZH, zh-*, en-US]
          browser: [mobile, tablet]
          user_agent: "Firefox/1[0-9]+"
        backend: api
        request_headers: {set: {X-Request-Start: "%{start_ms}"}, add: {Via: "%{listener}"}, remove: [X-Internal]}
        response_headers: {set: {X-Served-By: "%{server}"}}
        rewrite: {strip_prefix: /api, add_prefix: /v2, regex: "^/v2/(.*)$", replace: "/v3/\\\\1"}
        timeouts: {connect: 2s, server: 500ms}
        retries: 0
        deny: ["192.0.2.66"]
      - redirect: {to: "https://$host$path$query", status: 308}
      - respond: {status: 503, body: maintenance, headers: {Retry-After: "120"}}
      - deny: {status: 404}
no_vhost_status: 404
"""
    )
    lst = cfg.listeners[0]
    vh = lst.vhosts[0]
    assert vh.name == "www.example.com"
    assert vh.server_names == ["www.example.com", "*.example.com", "~^shop[0-9]+\\.example\\.com$"]
    assert vh.addresses == ["::1", "127.0.0.1"]
    r0, r1, r2, r3 = vh.routes
    assert r0.match is not None
    assert r0.match.methods == ["GET", "POST"]
    assert r0.match.language == ["zh", "en-us"]
    assert r0.match.browser == ["mobile", "tablet"]
    assert r0.timeouts is not None and r0.timeouts.server == 0.5 and r0.timeouts.total is None
    assert r0.deny == Deny(source=["192.0.2.66"]) and not r0.deny.is_action and r0.action == "backend"
    assert [r.action for r in (r1, r2, r3)] == ["redirect", "respond", "deny"]
    assert r3.deny is not None and r3.deny.status == 404 and r3.deny.body is None
    assert r2.respond is not None and r2.respond.content_type == "text/plain; charset=utf-8"
    assert lst.no_vhost_status == 404


def test_vhosts_alone_are_enough_and_unnamed_default_is_called_default() -> None:
    cfg = load("vhosts:\n  - {default: true, routes: [{backend: app}]}")
    assert cfg.listeners[0].vhosts[0].name == "default"


def test_rewrite_regex_is_stored_bare() -> None:
    routes = load(
        "routes:\n"
        "  - {match: {path: /a}, backend: app, rewrite: {regex: '~*^/A/(.*)', replace: '/\\1'}}\n"
        "  - {match: {path: /b}, backend: app, rewrite: {regex: '~^/b', replace: /c}}\n"
        "  - {backend: app, rewrite: {regex: '^/d', replace: /e}}"
    ).listeners[0].routes
    assert [r.rewrite.regex for r in routes if r.rewrite is not None] == ["(?i)^/A/(.*)", "^/b", "^/d"]


def test_helpers() -> None:
    assert compile_pattern("/plain") is None
    p = compile_pattern("~*^/A")
    assert p is not None and p.search(b"/a")
    assert server_name_kind("*.example.com") == ("wildcard", "example.com")
    assert server_name_kind(".example.com") == ("dotted", "example.com")
    assert server_name_kind("[::1]") == ("exact", "[::1]")
    with pytest.raises(ValueError, match="not a host name"):
        server_name_kind("www.*.com")


# ---------------------------------------------------------------- errors


def test_bad_regexes_name_their_key() -> None:
    assert problems("routes: [{match: {path: '~^/items/[0-9+$'}, backend: app}]") == [
        "listeners[0].routes[0].match.path: bad regular expression '~^/items/[0-9+$': "
        "unterminated character set at position 8"
    ]
    assert problems("vhosts: [{server_names: ['~(x'], routes: [{backend: app}]}]") == [
        "listeners[0].vhosts[0].server_names: bad regular expression '~(x': "
        "missing ), unterminated subpattern at position 0"
    ]
    assert problems("routes: [{match: {headers: {X-A: '~*['}}, backend: app}]") == [
        "listeners[0].routes[0].match.headers: header 'X-A': bad regular expression '~*[': "
        "unterminated character set at position 0"
    ]
    assert problems("routes: [{match: {user_agent: '(?P<'}, backend: app}]")[0].startswith(
        "listeners[0].routes[0].match.user_agent: bad regular expression '(?P<'"
    )


def test_exactly_one_action() -> None:
    assert problems("routes: [{backend: app}, {backend: app}, {backend: app, redirect: {to: /x}}]") == [
        "listeners[0].routes[2]: give exactly one of backend, redirect, respond, deny (got backend and redirect)"
    ]
    assert problems("routes: [{match: {path: /x}}]") == [
        "listeners[0].routes[0]: give exactly one of backend, redirect, respond, deny (got none)"
    ]
    assert problems("routes: [{deny: [10.0.0.0/8]}]") == [
        "listeners[0].routes[0]: give exactly one of backend, redirect, respond, deny (got none; a deny with "
        "source (or a CIDR list) is an access rule, not an action)"
    ]


def test_unknown_backend_in_a_vhost_route_names_its_path() -> None:
    body = "vhosts:\n  - {server_names: [a.example], routes: [{backend: app}]}\n" \
           "  - {server_names: [b.example], routes: [{backend: x}]}"
    assert problems(body) == ["listeners[0].vhosts[1].routes[0].backend: no backend named 'x'"]


def test_vhost_rules_across_vhosts() -> None:
    body = """
vhosts:
  - {server_names: [a.example, "*.b.example"], default: true, routes: [{backend: app}]}
  - {server_names: [A.example., .b.example], default: true, routes: [{backend: app}]}
  - {name: inner, server_names: [a.example], addresses: [10.0.0.1], default: true, routes: [{backend: app}]}
"""
    assert problems(body) == [
        "listeners[0].vhosts[1].default: vhosts[0] is already the default for addresses any",
        "listeners[0].vhosts[1].server_names: 'a.example' is also a name of vhosts[0] (their addresses overlap)",
        "listeners[0].vhosts[1].server_names: '.b.example' is also a name of vhosts[0] (their addresses overlap)",
        "listeners[0].vhosts[1].name: 'a.example' is also the name of vhosts[0]",
        "listeners[0].vhosts[2].server_names: 'a.example' is also a name of vhosts[0] (their addresses overlap)",
    ]


def test_same_name_on_different_addresses_is_fine() -> None:
    load(
        "vhosts:\n"
        "  - {name: one, server_names: [a.example], addresses: [10.0.0.1], default: true, routes: [{backend: app}]}\n"
        "  - {name: two, server_names: [a.example], addresses: [10.0.0.2], default: true, routes: [{backend: app}]}"
    )


def test_route_names_are_unique_in_a_listener() -> None:
    body = "vhosts: [{server_names: [a], routes: [{name: x, backend: app}]}]\nroutes: [{name: x, backend: app}]"
    assert problems(body) == ["listeners[0].routes[0].name: 'x' is also the name of vhosts[0].routes[0]"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("vhosts: [{server_names: [a]}]", "listeners[0].vhosts[0].routes: Field required"),
        ("vhosts: [{server_names: [a], routes: []}]",
         "listeners[0].vhosts[0].routes: List should have at least 1 item after validation, not 0"),
        ("vhosts: [{routes: [{backend: app}]}]",
         "listeners[0].vhosts[0]: a vhost needs server_names or default: true (otherwise no request reaches it)"),
        ("vhosts: [{server_names: ['www.*.com'], routes: [{backend: app}]}]",
         "listeners[0].vhosts[0].server_names: 'www.*.com' is not a host name, *.name, .name or ~regex"),
        ("vhosts: [{server_names: [a], addresses: [eth0], routes: [{backend: app}]}]",
         "listeners[0].vhosts[0].addresses: expected a local IP address, got 'eth0'"),
        ("backend: app\nallow: [lan]", "listeners[0].allow: expected a CIDR like 10.0.0.0/8, got 'lan'"),
        ("backend: app\nno_vhost_status: 500", "listeners[0].no_vhost_status: Input should be 421 or 404"),
        ("routes: [{match: {language: [en_US]}, backend: app}]",
         "listeners[0].routes[0].match.language: 'en_US' is not a language range like zh, zh-* or en-US"),
        ("routes: [{match: {browser: phone}, backend: app}]",
         "listeners[0].routes[0].match.browser[0]: Input should be 'mobile', 'tablet', 'desktop' or 'bot'"),
        ("routes: [{match: {path: api}, backend: app}]",
         "listeners[0].routes[0].match.path: expected a path starting with / or a ~regex, got 'api'"),
        ("routes: [{match: {source: [10.0.0.0/33]}, backend: app}]",
         "listeners[0].routes[0].match.source: expected a CIDR like 10.0.0.0/8, got '10.0.0.0/33'"),
        ("routes: [{redirect: {to: 'https://$hostname/'}}]",
         "listeners[0].routes[0].redirect: unknown variable $hostname in 'https://$hostname/' "
         "(known: $scheme $host $path $query)"),
        ("routes: [{redirect: {to: 'https://a b/'}}]",
         "listeners[0].routes[0].redirect: target 'https://a b/' holds ' '; percent-encode it"),
        ("routes: [{respond: {status: 204, body: x}}]", "listeners[0].routes[0].respond: a 204 response has no body"),
        ("routes: [{respond: {status: 200, headers: {Content-Length: '3'}}}]", None),
        ("routes: [{backend: app, request_headers: {set: {X-Forwarded-For: x}}}]", None),
        ("routes: [{backend: app, request_headers: {set: {X-Srv: '%{server}'}}}]", None),
        ("routes: [{redirect: {to: /x, status: 200}}]", None),
        ("routes: [{respond: {status: 600}}]", "listeners[0].routes[0].respond.status: Input should be less than "
         "or equal to 599"),
        ("routes: [{respond: {status: 100}}]", "listeners[0].routes[0].respond.status: Input should be greater than "
         "or equal to 200"),
        ("routes: [{deny: {status: 200}}]", "listeners[0].routes[0].deny.status: Input should be greater than or "
         "equal to 400"),
        ("routes: [{backend: app, request_headers: {set: {X-Id: '%{reqid}'}}}]", None),
        ("routes: [{backend: app, response_headers: {remove: ['bad name']}}]",
         "listeners[0].routes[0].response_headers: 'bad name' is not a valid header field name"),
        ("routes: [{backend: app, rewrite: {regex: '^/a'}}]",
         "listeners[0].routes[0].rewrite: regex and replace go together"),
        ("routes: [{backend: app, rewrite: {regex: '^/(a)', replace: '/\\2'}}]",
         "listeners[0].routes[0].rewrite: bad replacement b'/\\\\2' for b'^/(a)': "
         "invalid group reference 2 at position 2"),
        ("routes: [{backend: app, rewrite: {regex: '~^/(a', replace: '/'}}]",
         "listeners[0].routes[0].rewrite.regex: bad regular expression '~^/(a': missing ), unterminated subpattern "
         "at position 2"),
        ("routes: [{backend: app, rewrite: {strip_prefix: api}}]",
         "listeners[0].routes[0].rewrite: strip_prefix 'api' must be a path: '/' first, no space, '?' or '#'"),
        ("routes: [{backend: app, rewrite: {}}]",
         "listeners[0].routes[0].rewrite: nothing to do (give strip_prefix, add_prefix or regex)"),
        ("routes: [{redirect: {to: /x}, retries: 1}]",
         "listeners[0].routes[0]: retries: only for a route with a backend (this one has redirect)"),
        ("routes: [{respond: {status: 200}, response_headers: {set: {X-A: b}}}]",
         "listeners[0].routes[0]: response_headers: only for a route with a backend (this one has respond)"),
        ("routes: [{backend: app, timeouts: {connect: 0s}}]",
         "listeners[0].routes[0].timeouts.connect: Input should be greater than 0"),
    ],
)
def test_errors(body: str, expected: str | None) -> None:
    got = problems(body)
    assert len(got) == 1, got
    if expected is not None:
        assert got == [expected]


def test_unknown_header_variable_lists_the_known_ones() -> None:
    (msg,) = problems("routes: [{backend: app, request_headers: {set: {X-Id: '%{reqid}'}}}]")
    assert msg.startswith("listeners[0].routes[0].request_headers: unknown variable %{reqid} in template")
    assert "client_ip" in msg and "request_id" in msg


def test_l4_listeners_refuse_vhosts_and_acls() -> None:
    text = 'listeners:\n  - {name: db, mode: tcp, bind: ["127.0.0.1:5432"], backend: app, allow: [10.0.0.0/8]}\n'
    with pytest.raises(ConfigError) as info:
        load_text(text + BACKENDS)
    assert info.value.problems == ["listeners[0]: vhosts, allow and deny are for http listeners"]


def test_a_list_check_accepts_is_one_a_worker_builds() -> None:
    """One CIDR parser for the schema and the workers: 'all' and IPv4-mapped networks
    are accepted by both; host bits set are refused by check, naming the network meant."""
    from pyvs.config.loader import ConfigError, load_text
    from pyvs.runtime.worker import WorkerRuntime

    ok = load_text(
        'listeners: [{name: web, bind: ["127.0.0.1:1"], allow: [all, "::ffff:10.0.0.0/104"],'
        ' routes: [{backend: b, match: {source: [all]}}]}]\n'
        'backends: [{name: b, servers: [{name: s, address: "127.0.0.1:2"}]}]\n'
    )
    loop = asyncio.new_event_loop()
    try:
        WorkerRuntime(ok, 0, loop)  # builds the ACL filter and the source condition
    finally:
        loop.close()
    with pytest.raises(ConfigError, match=re.escape("host bits set: write '10.0.0.0/8'")):
        load_text(
            'listeners: [{name: web, bind: ["127.0.0.1:1"], allow: ["10.0.0.5/8"], backend: b}]\n'
            'backends: [{name: b, servers: [{name: s, address: "127.0.0.1:2"}]}]\n'
        )

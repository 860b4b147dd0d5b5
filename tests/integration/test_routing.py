"""Content routing end to end: vhosts, every route condition and action, with curl and
raw sockets against a 2-worker pyvs and real backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, raw_exchange

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0.0.0 Safari/537.36")
NAMES = ("web", "api", "zh", "en", "mobile", "shop")


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.b = {n: Backend(lt, n) for n in NAMES}
        self.port = free_port()
        self.strict = free_port()
        self.byip = free_port()
        self.closed = free_port()
        main_routes: list[dict[str, Any]] = [
            {"name": "hurry", "match": {"path": "/slow", "query": {"hurry": True}}, "backend": "web",
             "timeouts": {"server": "200ms"}, "retries": 0,
             "response_headers": {"set": {"X-Request-Id": "%{request_id}", "X-Route": "%{vhost}/%{route}"}}},
            {"name": "api", "match": {"path_prefix": "/api/", "methods": ["GET", "POST"]}, "backend": "api",
             "rewrite": {"strip_prefix": "/api"},
             "request_headers": {"set": {"X-Route": "api", "X-Client": "%{client_ip}"}, "remove": ["X-Internal"]},
             "response_headers": {"set": {"X-Served-By": "%{server}"}, "remove": ["X-Server"]}},
            {"name": "items", "match": {"path": "~^/items/[0-9]+$"}, "backend": "api"},
            {"match": {"headers": {"X-Env": "prod"}}, "backend": "shop"},
            {"match": {"headers": {"X-Canary": True}}, "backend": "shop"},
            {"match": {"query": {"lang": "zh"}}, "backend": "zh"},
            {"match": {"cookies": {"beta": "1"}}, "backend": "shop"},
            {"match": {"source": ["10.0.0.0/8"]}, "respond": {"status": 418, "body": "never"}},
            {"match": {"language": ["zh"]}, "backend": "zh"},
            {"match": {"language": ["en"]}, "backend": "en"},
            {"match": {"browser": "mobile"}, "backend": "mobile"},
            {"match": {"path": "/ua", "user_agent": "~^Wget/"}, "backend": "shop"},
            {"match": {"path": "/old"}, "redirect": {"to": "https://$host/new$query", "status": 301}},
            {"match": {"path": "/maint"},
             "respond": {"status": 503, "body": "maintenance", "headers": {"Retry-After": "120"}}},
            {"match": {"path_prefix": "/admin"}, "deny": {}},
            {"name": "rest", "backend": "web"},
        ]
        cfg: dict[str, Any] = {
            "listeners": [
                {"name": "web", "bind": [f"127.0.0.1:{self.port}"],
                 "vhosts": [
                     {"name": "main", "server_names": ["www.example.com", "*.example.com"], "default": True,
                      "routes": main_routes},
                     {"server_names": ["api.example.org"], "routes": [{"backend": "api", "allow": ["192.0.2.0/24"]}]},
                     {"name": "shops", "server_names": ["shop.example.net", "~^shop[0-9]+\\.example\\.net$"],
                      "routes": [{"backend": "shop"}]},
                 ]},
                {"name": "strict", "bind": [f"127.0.0.1:{self.strict}"], "deny": ["192.0.2.0/24"],
                 "vhosts": [{"server_names": ["only.example"], "routes": [{"backend": "web"}]}]},
                {"name": "closed", "bind": [f"127.0.0.1:{self.closed}"], "allow": ["192.0.2.0/24"],
                 "vhosts": [{"server_names": ["only.example"], "routes": [{"backend": "web"}]}]},
                {"name": "byip", "bind": [f"127.0.0.1:{self.byip}", f"127.0.0.2:{self.byip}"],
                 "vhosts": [
                     {"name": "second-ip", "server_names": ["www.example.com"], "addresses": ["127.0.0.2"],
                      "routes": [{"backend": "shop"}]},
                     {"name": "first-ip", "server_names": ["www.example.com"], "addresses": ["127.0.0.1"],
                      "routes": [{"backend": "web"}]},
                 ]},
            ],
            "backends": [{"name": n, "servers": [{"name": n, "address": b.address}]} for n, b in self.b.items()],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def get(self, path: str, *args: str, host: str = "www.example.com", port: int | None = None,
            ip: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
        """(status, response fields (lower-case names), body) of one curl request."""
        r = curl("-i", "-H", f"Host: {host}", *args, f"http://{ip}:{port or self.port}{path}")
        assert r.returncode == 0, r.stderr
        head, _, body = r.stdout.decode().partition("\r\n\r\n")
        lines = head.split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        return int(lines[0].split()[1]), fields, body

    def who(self, path: str = "/", *args: str, **kw: Any) -> str:
        status, _, body = self.get(path, *args, **kw)
        assert status == 200, (status, body)
        return body


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    lt = LoopThread()
    e = Env(lt, tmp_path_factory.mktemp("routing"))
    yield e
    e.pyvs.stop()
    for b in e.b.values():
        b.close()
    lt.stop()


def test_default_route_and_vhost_names(env: Env) -> None:
    assert env.who("/") == "web"
    assert env.who("/", host="WWW.Example.COM.:8080") == "web"  # case, trailing dot, port
    assert env.who("/", host="img.example.com") == "web"  # leading wildcard
    assert env.who("/", host="shop.example.net") == "shop"
    assert env.who("/", host="shop42.example.net") == "shop"  # regex name
    assert env.who("/", host="unknown.example") == "web"  # the default vhost


def test_no_vhost_is_421(env: Env) -> None:
    status, _, _ = env.get("/", host="unknown.example", port=env.strict)
    assert status == 421
    assert env.who("/", host="only.example", port=env.strict) == "web"


def test_listener_acl_runs_before_routing(env: Env) -> None:
    """A client outside the listener's allow list gets 403 whatever the Host (never a
    421 that would tell it which names exist); one not in its deny list is served."""
    for host in ("only.example", "unknown.example"):
        status, _, _ = env.get("/", host=host, port=env.closed)
        assert status == 403
    assert env.who("/", host="only.example", port=env.strict) == "web"


def test_vhost_by_local_address(env: Env) -> None:
    assert env.who("/", port=env.byip) == "web"
    assert env.who("/", port=env.byip, ip="127.0.0.2") == "shop"


def test_path_prefix_methods_rewrite_and_headers(env: Env) -> None:
    status, fields, body = env.get("/api/headers", "-H", "X-Internal: secret")
    assert status == 200
    seen = json.loads(body)
    assert seen["X-Route"] == "api" and seen["X-Client"] == "127.0.0.1"
    assert "X-Internal" not in seen
    assert fields["x-served-by"] == "api"
    assert env.b["api"].seen_headers  # reached the api pool, rewritten to /headers
    # DELETE is not among the route's methods: the next routes decide
    assert env.who("/api/headers", "-X", "DELETE") == "web"


def test_regex_path(env: Env) -> None:
    assert env.who("/items/123") == "api"
    assert env.who("/items/12x") == "web"


def test_header_query_cookie_conditions(env: Env) -> None:
    assert env.who("/", "-H", "X-Env: prod") == "shop"
    assert env.who("/", "-H", "X-Env: staging") == "web"
    assert env.who("/", "-H", "X-Canary: anything") == "shop"
    assert env.who("/?lang=zh") == "zh"
    assert env.who("/?lang=en") == "web"
    assert env.who("/", "-b", "beta=1; other=2") == "shop"
    assert env.who("/", "-b", "beta=0") == "web"


def test_language_negotiation(env: Env) -> None:
    assert env.who("/", "-H", "Accept-Language: fr, zh;q=0.8, en;q=0.5") == "zh"
    assert env.who("/", "-H", "Accept-Language: zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert env.who("/", "-H", "Accept-Language: en-US,en;q=0.9") == "en"
    assert env.who("/", "-H", "Accept-Language: en;q=0.9, zh;q=0.5") == "en"
    assert env.who("/", "-H", "Accept-Language: zh;q=0, en") == "en"
    assert env.who("/", "-H", "Accept-Language: de") == "web"  # nothing acceptable: falls through


def test_browser_and_user_agent(env: Env) -> None:
    assert env.who("/", "-A", IPHONE) == "mobile"
    assert env.who("/", "-A", DESKTOP) == "web"
    assert env.who("/ua", "-A", "Wget/1.21.3") == "shop"
    assert env.who("/ua") == "web"  # curl's own User-Agent


def test_redirect_respond_deny(env: Env) -> None:
    status, fields, _ = env.get("/old?a=1")
    assert status == 301 and fields["location"] == "https://www.example.com/new?a=1"
    status, fields, body = env.get("/maint")
    assert status == 503 and body == "maintenance" and fields["retry-after"] == "120"
    status, _, _ = env.get("/admin/x")
    assert status == 403
    status, _, _ = env.get("/", host="api.example.org")  # allow list without 127.0.0.1
    assert status == 403


def test_local_answers_keep_the_connection_and_pipeline(env: Env) -> None:
    """A redirect and a respond on one keep-alive connection, pipelined, then a proxied request."""
    req = (b"GET /old HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
           b"HEAD /maint HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
           b"GET /name HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
    out = raw_exchange(env.port, req)
    assert out.startswith(b"HTTP/1.1 301 ")
    assert out.count(b"HTTP/1.1 503 ") == 1 and b"maintenance" not in out  # HEAD: no body
    assert out.endswith(b"\r\n\r\nweb")


def test_http10_client_gets_close(env: Env) -> None:
    out = raw_exchange(env.port, b"GET /maint HTTP/1.0\r\nHost: www.example.com\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503 ") and b"Connection: close\r\n" in out and out.endswith(b"maintenance")


def test_absolute_form_routes_on_its_authority(env: Env) -> None:
    out = raw_exchange(env.port, b"GET http://shop7.example.net/headers HTTP/1.1\r\nHost: www.example.com\r\n"
                                 b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    seen = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert seen["Host"] == "shop7.example.net" and seen["X-Forwarded-Host"] == "shop7.example.net"
    bad = raw_exchange(env.port, b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 ")


def test_per_route_timeout_and_variables(env: Env) -> None:
    status, _, _ = env.get("/slow?delay=1&hurry=1")
    assert status == 504  # the route's 200ms, not the backend's 60s
    status, _, body = env.get("/slow?delay=0")  # same path, another route: the backend's timeout
    assert status == 200 and body == "slow web"
    ids = set()
    for _ in range(6):  # two workers: ids carry the worker's pid, so they never collide
        status, fields, _ = env.get("/slow?delay=0&hurry=1")
        assert status == 200 and fields["x-route"] == "main/hurry"
        ids.add(fields["x-request-id"])
    assert len(ids) == 6

"""``pyvs route``: text and JSON output, listener choice, exit codes (0 matched, 2 none, 1 error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pyvs.cli import main

CONFIG = """\
listeners:
  - name: web
    bind: ["127.0.0.1:8080"]
    vhosts:
      - server_names: [www.a.example, "*.a.example"]
        routes:
          - name: api
            match: {path_prefix: /api/}
            backend: api
            rewrite: {strip_prefix: /api}
            timeouts: {connect: 2s}
            retries: 1
          - match: {methods: [POST]}
            backend: api
          - match: {query: {y: "1"}, headers: {X-Beta: true}}
            backend: web
            request_headers: {set: {X-Start: "%{start_ms}"}}
            deny: [10.0.0.0/8]
      - server_names: [old.a.example]
        routes:
          - redirect: {to: "https://www.a.example$path$query", status: 308}
    routes:
      - {name: maintenance, match: {path: /down}, respond: {status: 503, body: later}}
  - name: admin
    bind: ["0.0.0.0:9090"]
    no_vhost_status: 404
    vhosts:
      - {server_names: [admin.a.example], routes: [{match: {source: [192.0.2.0/24]}, backend: web}]}
  - {name: db, mode: tcp, bind: ["127.0.0.1:5432"], backend: web}
backends:
  - name: web
    servers: [{name: web1, address: "127.0.0.1:9001", weight: 3}, {name: web2, address: "127.0.0.1:9002"}]
  - name: api
    balance: leastconn
    servers: [{name: api1, address: "127.0.0.1:9101"}]
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "pyvs.yaml"
    path.write_text(CONFIG)
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["route", *args])


def test_text_output_of_a_match(config: str) -> None:
    res = run("-c", config, "get", "http://www.a.example:8080/x?y=1", "-H", "X-Beta: on")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        "listener  web",
        "request   GET /x?y=1  Host: www.a.example:8080  from 127.0.0.1 to 127.0.0.1",
        "vhost     www.a.example (exact name www.a.example)",
        "tried     api: path_prefix /api/ (path is /x)",
        "          www.a.example/1: methods POST (method is GET)",
        "route     www.a.example/2 (vhosts[0].routes[2])",
        "matched   header X-Beta present, query y '1'",
        "action    backend web",
        'features  request_headers: {"set": {"X-Start": "%{start_ms}"}}',
        '          deny: ["10.0.0.0/8"]',
        "backend   web: roundrobin, 2 server(s): web1 127.0.0.1:9001 weight 3, web2 127.0.0.1:9002",
    ]


def test_json_output(config: str) -> None:
    res = run("-c", config, "GET", "http://x.a.example:8080/api/v1", "--from", "10.1.2.3", "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["listener"] == "web"
    assert rep["request"] == {"method": "GET", "target": "/api/v1", "host": "x.a.example:8080", "scheme": "http",
                              "client": "10.1.2.3", "local": "127.0.0.1"}
    assert (rep["vhost"], rep["why"], rep["server_name"]) == ("www.a.example", "wildcard", "*.a.example")
    assert rep["tried"] == []
    assert rep["route"] == {"name": "api", "index": 0, "where": "vhosts[0].routes[0]"}
    assert rep["matched"] == ["path_prefix /api/"]
    assert rep["action"] == {"type": "backend", "backend": "api"}
    assert rep["features"] == {"rewrite": {"strip_prefix": "/api"}, "timeouts": {"connect": "2s"}, "retries": 1}
    assert rep["backend"] == {"name": "api", "balance": "leastconn",
                              "servers": [{"name": "api1", "address": "127.0.0.1:9101", "weight": 1, "backup": False}]}
    assert rep["access"] == {"listener": 0, "route": 0}
    assert rep["status"] is None


def test_route_deny_list_is_reported(config: str) -> None:
    res = run("-c", config, "GET", "http://www.a.example:8080/?y=1", "-H", "X-Beta: 1", "--from", "10.0.0.9")
    assert res.exit_code == 0
    assert "access    route allow/deny refuses 10.0.0.9: pyvs answers 403 Forbidden" in res.output


def test_redirect_shows_the_location(config: str) -> None:
    res = run("-c", config, "GET", "http://old.a.example:8080/p?q=1")
    assert res.exit_code == 0
    assert "action    redirect 308 to https://www.a.example/p?q=1 (https://www.a.example$path$query)" in res.output


def test_fallback_respond_route(config: str) -> None:
    res = run("-c", config, "GET", "http://unknown.example:8080/down", "--json")
    rep = json.loads(res.output)
    assert res.exit_code == 0
    assert (rep["vhost"], rep["why"]) == (None, "fallback")
    assert rep["action"] == {"type": "respond", "status": 503, "body": "later"}


def test_no_route_exits_2_with_the_status(config: str) -> None:
    res = run("-c", config, "GET", "http://unknown.example:8080/x")
    assert res.exit_code == 2
    assert res.output.splitlines()[-2:] == [
        "tried     maintenance: path /down (path is /x)",
        "result    no route matched: pyvs answers 503 Service Unavailable",
    ]
    res = run("-c", config, "GET", "http://nobody.example:9090/", "--json")
    assert res.exit_code == 2
    rep = json.loads(res.output)
    assert (rep["listener"], rep["why"], rep["status"], rep["route"]) == ("admin", "none", 404, None)


def test_listener_by_port_by_name_and_origin_form(config: str) -> None:
    # Port 9090 picks "admin"; its wildcard bind means the request arrives on loopback.
    res = run("-c", config, "GET", "http://admin.a.example:9090/", "--from", "192.0.2.7", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["request"]["local"] == "127.0.0.1"
    # Origin form with -H Host, listener by name.
    res = run("-c", config, "GET", "/", "-H", "Host: admin.a.example", "--listener", "admin", "--from", "192.0.2.7")
    assert res.exit_code == 0 and "vhost     admin.a.example (exact name admin.a.example)" in res.output
    # Origin form without Host: the listener's first bind is the Host, no vhost has it.
    res = run("-c", config, "GET", "/down", "--json")
    rep = json.loads(res.output)
    assert (rep["request"]["host"], rep["why"], rep["route"]["name"]) == ("127.0.0.1:8080", "fallback", "maintenance")
    # No port match: the first http listener.
    assert json.loads(run("-c", config, "GET", "http://www.a.example/api/", "--json").output)["listener"] == "web"
    # --local
    res = run("-c", config, "GET", "/down", "--local", "[::1]:8080", "--json")
    assert json.loads(res.output)["request"]["local"] == "::1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("GET", "ftp://x/"), "URL: expected http:// or https://, got ftp://"),
        (("GET", "x/y"), "URL: expected an absolute URL"),
        (("GET", "/", "-H", "NoColon"), "-H: expected 'Name: value', got 'NoColon'"),
        (("GET", "/", "--from", "me"), "--from: expected an IP address, got 'me'"),
        (("GET", "/", "--listener", "db"), "listener 'db' is a tcp listener: only http listeners route"),
        (("GET", "/", "--listener", "nope"), "no listener named 'nope' (http listeners: web, admin)"),
        (("GET", "/", "--local", "eth0"), "--local: expected an IP address, got 'eth0'"),
        (("G T", "/"), "the request is not valid HTTP/1.1"),
    ],
)
def test_bad_requests_exit_1(config: str, args: tuple[str, ...], message: str) -> None:
    res = run("-c", config, *args)
    assert res.exit_code == 1
    assert message in res.output


def test_config_error_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.replace("backend: api\n            rewrite", "backend: nope\n            rewrite"))
    res = run("-c", str(path), "GET", "/")
    assert res.exit_code == 1
    assert "listeners[0].vhosts[0].routes[0].backend: no backend named 'nope'" in res.output

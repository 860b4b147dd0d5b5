"""The runtime API end to end: a real pyvs (two workers), real backends, real HTTP.

Every route of ``pyvs/admin/openapi.yaml`` is called on the live admin listener; the
actions are checked by what the traffic does afterwards (a drained server gets no new
request, a server added at runtime gets some, and a reload of the file undoes it).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port


def api(pyvs: Pyvs, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One admin request (never through a proxy): (status, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{pyvs.admin_port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            raw, code, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        with err:
            raw, code, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
    return code, json.loads(raw) if "json" in ctype else raw.decode()


def server(pyvs: Pyvs, backend: str, name: str) -> dict[str, Any]:
    code, s = api(pyvs, "GET", f"/backends/{backend}/servers/{name}")
    assert code == 200, s
    return dict(s)


def hits(port: int, n: int) -> list[str]:
    r = curl(*[f"http://127.0.0.1:{port}/name"] * n, "-w", "\n")
    assert r.returncode == 0, r
    return r.stdout.decode().split()


@pytest.fixture(scope="module")
def env(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("admin-api")
    a, b, c = (Backend(loop_thread, n) for n in "abc")
    web, sticky = free_port(), free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{web}"], "backend": "app"},
                      {"name": "sticky", "bind": [f"127.0.0.1:{sticky}"], "backend": "st"}],
        "backends": [
            {"name": "app", "servers": [{"name": "a", "address": a.address}, {"name": "b", "address": b.address}]},
            {"name": "st", "persistence": {"type": "source", "timeout": "10m"},
             "servers": [{"name": "a", "address": a.address}, {"name": "b", "address": b.address}]},
        ],
    }
    pyvs = Pyvs(cfg, tmp, workers=2)
    try:
        yield {"pyvs": pyvs, "web": web, "sticky": sticky, "c": c}
    finally:
        pyvs.stop()
        for x in (a, b, c):
            x.close()


def test_every_documented_route_answers(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    doc = yaml.safe_load(files("pyvs.admin").joinpath("openapi.yaml").read_text())
    values = {"backend": "st", "server": "a", "action": "enable"}
    live: set[tuple[str, str]] = set()
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        for method in ops:
            if method == "parameters" or (method == "delete" and path.endswith("{server}")):
                continue  # removing a server is exercised below
            if path == "/events":
                continue  # a stream: test_events_stream
            if path == "/reload" or path == "/backends/{backend}/servers":
                continue  # changes the running generation: tests below
            code, _ = api(pyvs, method.upper(), concrete + ("?url=/x" if path == "/cache/purge" else ""),
                          body={} if method == "post" else None)
            assert code < 500 and code not in (404, 405), (method, path, code)
            live.add((method, path))
    assert len(live) >= 12


def test_views(env: dict[str, Any]) -> None:
    pyvs, web = env["pyvs"], env["web"]
    hits(web, 10)
    pyvs.wait_status(lambda st: st["totals"]["requests"] >= 10)
    code, listeners = api(pyvs, "GET", "/listeners")
    assert code == 200 and {x["name"]: x["backends"] for x in listeners} == {"web": ["app"], "sticky": ["st"]}
    code, backends = api(pyvs, "GET", "/backends")
    assert code == 200 and [b["name"] for b in backends] == ["app", "st"]
    app = backends[0]
    assert app["servers_total"] == 2 and app["requests"] >= 10 and backends[1]["stick_table"] is True
    s = app["servers"][0]
    for key in ("state", "weight", "effective_weight", "active", "req_per_s", "error_rate", "last_check"):
        assert key in s
    code, summary = api(pyvs, "GET", "/api/summary")
    assert code == 200 and summary["totals"]["requests"] >= 10 and "req_per_s" in summary["rates"]


def test_unknown_names_are_404_with_the_name(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    code, body = api(pyvs, "POST", "/backends/app/servers/zz/drain")
    assert code == 404 and "'zz'" in body["error"]
    code, body = api(pyvs, "POST", "/backends/nope/servers/a/drain")
    assert code == 404 and "'nope'" in body["error"]
    code, body = api(pyvs, "POST", "/backends/app/servers/a/explode")
    assert code == 400 and "unknown action" in body["error"]


def test_drain_takes_no_new_requests_and_enable_brings_it_back(env: dict[str, Any]) -> None:
    pyvs, web = env["pyvs"], env["web"]
    code, body = api(pyvs, "POST", "/backends/app/servers/a/drain")
    assert code == 200 and body["state"] == "DRAIN"
    assert server(pyvs, "app", "a")["state"] == "DRAIN"
    assert set(hits(web, 20)) == {"b"}
    code, body = api(pyvs, "POST", "/backends/app/servers/a/enable")
    assert code == 200 and body["state"] == "UP"
    assert set(hits(web, 20)) == {"a", "b"}


def test_disable_is_maint(env: dict[str, Any]) -> None:
    pyvs, web = env["pyvs"], env["web"]
    assert api(pyvs, "POST", "/backends/app/servers/b/disable")[1]["state"] == "MAINT"
    assert set(hits(web, 10)) == {"a"}
    assert api(pyvs, "POST", "/backends/app/servers/b/enable")[1]["state"] == "UP"


def test_weight(env: dict[str, Any]) -> None:
    pyvs, web = env["pyvs"], env["web"]
    code, body = api(pyvs, "POST", "/backends/app/servers/b/weight", {"weight": 0})
    assert code == 200 and body["weight"] == 0 and body["was"] == 1 and "next reload" in body["note"]
    assert set(hits(web, 20)) == {"a"}
    s = server(pyvs, "app", "b")
    assert s["weight"] == 0 and s["effective_weight"] == 0 and s["state"] == "UP"
    for bad in (-1, 257, "3", None, 1.5, True):
        code, body = api(pyvs, "POST", "/backends/app/servers/b/weight", {"weight": bad})
        assert code == 400 and body["error"].startswith("weight:"), bad
    assert api(pyvs, "POST", "/backends/app/servers/b/weight", {"weight": 1})[0] == 200
    assert set(hits(web, 20)) == {"a", "b"}


def test_stick_table_show_and_clear(env: dict[str, Any]) -> None:
    pyvs, sticky = env["pyvs"], env["sticky"]
    first = hits(sticky, 5)
    assert len(set(first)) == 1  # one client address: one server
    code, table = api(pyvs, "GET", "/backends/st/stick")
    assert code == 200 and table["size"] == 1 and table["entries"][0]["server"] == first[0]
    code, body = api(pyvs, "DELETE", "/backends/st/stick")
    assert code == 200 and body["cleared"] == 1
    assert api(pyvs, "GET", "/backends/st/stick")[1]["size"] == 0
    code, body = api(pyvs, "GET", "/backends/app/stick")
    assert code == 404 and "no stick table" in body["error"]


def test_purge_without_a_cache_says_so(env: dict[str, Any]) -> None:
    code, body = api(env["pyvs"], "POST", "/cache/purge?url=/x")
    assert code == 409 and "no cache configured" in body["error"]


def test_cross_origin_requests_are_refused(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    code, body = api(pyvs, "POST", "/backends/app/servers/a/drain", headers={"Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in body["error"]
    assert server(pyvs, "app", "a")["state"] == "UP"
    own = f"http://127.0.0.1:{pyvs.admin_port}"
    assert api(pyvs, "GET", "/backends", headers={"Origin": own})[0] == 200


def test_add_and_remove_a_server_until_the_next_reload(env: dict[str, Any]) -> None:
    pyvs, web, c = env["pyvs"], env["web"], env["c"]
    gen = pyvs.status()["generation"]
    code, body = api(pyvs, "POST", "/backends/app/servers", {"name": "c", "address": "nonsense"})
    assert code == 422 and any(e.startswith("address:") for e in body["errors"]), body
    code, body = api(pyvs, "POST", "/backends/app/servers", {"name": "a", "address": c.address})
    assert code == 422 and any("used twice" in e for e in body["errors"]), body
    code, body = api(pyvs, "POST", "/backends/app/servers", {"name": "c", "address": c.address, "bogus": 1})
    assert code == 400 and body["error"].startswith("bogus: unknown key")
    code, body = api(pyvs, "POST", "/backends/app/servers", {"name": "c", "address": c.address, "weight": 2})
    assert code == 201 and body["ok"] and "next reload" in body["note"] and body["generation"] == gen + 1
    pyvs.wait_ready()
    assert "c" in hits(web, 30)
    assert server(pyvs, "app", "c")["weight"] == 2
    code, body = api(pyvs, "DELETE", "/backends/app/servers/a")
    assert code == 200 and body["generation"] == gen + 2
    pyvs.wait_ready()
    assert "a" not in hits(web, 20)
    # The next reload of the file undoes both.
    code, body = api(pyvs, "POST", "/reload")
    assert code == 200 and body["ok"], body
    pyvs.wait_ready()
    assert set(hits(web, 20)) == {"a", "b"}
    assert api(pyvs, "GET", "/backends/app/servers/c")[0] == 404


def test_the_last_server_cannot_be_removed(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    assert api(pyvs, "POST", "/backends/app/servers/a/enable")[0] == 200
    code, body = api(pyvs, "DELETE", "/backends/app/servers/a")
    assert code == 200
    pyvs.wait_ready()
    code, body = api(pyvs, "DELETE", "/backends/app/servers/b")
    assert code == 422 and body["errors"], body
    assert api(pyvs, "POST", "/reload")[0] == 200
    pyvs.wait_ready()


def test_every_action_is_journaled_and_logged(env: dict[str, Any], tmp_path: Path) -> None:
    pyvs = env["pyvs"]
    api(pyvs, "POST", "/backends/app/servers/b/maint")
    api(pyvs, "POST", "/backends/app/servers/b/enable")
    code, journal = api(pyvs, "GET", "/actions")
    assert code == 200 and journal[-1]["action"] == "POST enable app/b" and journal[-1]["peer"] == "127.0.0.1"
    assert any(not j["ok"] for j in journal)  # refused ones too
    log = pyvs.log.read_text()
    assert "admin action by 127.0.0.1: POST maint app/b: done" in log


def test_events_stream(env: dict[str, Any]) -> None:
    pyvs = env["pyvs"]
    req = urllib.request.Request(f"http://127.0.0.1:{pyvs.admin_port}/events")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.readline() == b"event: summary\n"
        line = resp.readline()
        assert line.startswith(b"data: ")
        assert json.loads(line[6:])["backends"][0]["name"] == "app"

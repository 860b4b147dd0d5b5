"""Access logs end to end: one line per request whatever its end, two workers on one
file, logrotate's SIGUSR1, syslog over UDP, page views merged in the supervisor."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyvs.runtime.stats import RETRIES
from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, raw_exchange


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def _wait_lines(path: Path, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The log's lines once there are ``n`` (each must be one whole JSON object)."""
    deadline = time.monotonic() + timeout
    while len(_lines(path)) < n:
        assert time.monotonic() < deadline, f"{len(_lines(path))} lines of {n}:\n{path.read_text()[-2000:]}"
        time.sleep(0.05)
    raw = _lines(path)
    assert all(line.endswith(b"\n") for line in raw)
    return [json.loads(line) for line in raw]


def _config(port: int, web: Backend, log: Path, **glob: Any) -> dict[str, Any]:
    return {
        "global": {"access_log": {"path": str(log), "flush": "50ms"}, **glob},
        "pageviews": {"content_types": []},
        "listeners": [{
            "name": "web", "bind": [f"127.0.0.1:{port}"], "max_body": "1k",
            "timeouts": {"request": "300ms"},
            "routes": [
                {"match": {"path_prefix": "/hello"}, "respond": {"status": 200, "body": "hi"}},
                {"match": {"path_prefix": "/old"}, "redirect": {"to": "/new", "status": 308}},
                {"match": {"path_prefix": "/dead"}, "backend": "dead"},
                {"match": {"path_prefix": "/flaky"}, "backend": "flaky"},
                {"match": {"path_prefix": "/slow"}, "backend": "web", "name": "slow", "timeouts": {"server": "200ms"}},
                {"backend": "web", "name": "main"},
            ],
        }],
        "backends": [
            {"name": "web", "servers": [{"name": "w1", "address": web.address}]},
            {"name": "dead", "retries": 0, "servers": [{"name": "gone", "address": f"127.0.0.1:{free_port()}"}]},
            {"name": "flaky", "balance": "first", "retries": 1, "servers": [
                {"name": "gone", "address": f"127.0.0.1:{free_port()}"}, {"name": "w1", "address": web.address}]},
        ],
    }


def _statuses(lines: list[dict[str, Any]]) -> Counter[int]:
    return Counter(x["http"]["response"]["status_code"] for x in lines)


def test_every_kind_of_request_end_gives_exactly_one_line(loop_thread: LoopThread, tmp_path: Path) -> None:
    web = Backend(loop_thread, "w1")
    port = free_port()
    log = tmp_path / "access.json"
    pyvs = Pyvs(_config(port, web, log), tmp_path, workers=2)
    try:
        base = f"http://127.0.0.1:{port}"
        urls = [f"{base}/page/{i}?q={i}" for i in range(10)]
        out = curl("-A", "Mozilla/5.0 (test)", "-e", "https://ref.example/",
                   *[x for u in urls for x in ("-o", "/dev/null", u)])
        assert out.returncode == 0, out.stderr
        assert curl(f"{base}/hello").stdout == b"hi"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/old").stdout == b"308"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/dead").stdout == b"502"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/flaky").stdout == b"200"  # after a retry
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/slow?delay=2").stdout == b"504"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", "-d", "x" * 2000, f"{base}/up").stdout == b"413"
        # HTTP/1.0, three pipelined requests, a malformed head, a head that never completes
        assert raw_exchange(port, b"GET /ten HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
        piped = raw_exchange(port, b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"
                                   b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert piped.count(b"HTTP/1.1 200 OK") == 3
        assert raw_exchange(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw_exchange(port, b"GET /never HTTP/1.1\r\nHost: a\r\n").startswith(b"HTTP/1.1 408")
        lines = _wait_lines(log, 22)
        time.sleep(0.3)  # nothing more may come
        assert len(_lines(log)) == 22
        assert _statuses(lines) == Counter({200: 16, 308: 1, 502: 1, 504: 1, 413: 1, 400: 1, 408: 1})

        by_path = {x.get("url", {}).get("path"): x for x in lines}
        page = by_path["/page/3"]
        assert page["url"]["query"] == "q=3" and page["url"]["domain"] == "127.0.0.1"
        assert page["client"]["ip"] == "127.0.0.1"
        assert page["http"]["request"] == {"method": "GET", "referrer": "https://ref.example/"}
        assert page["user_agent"]["original"] == "Mozilla/5.0 (test)"
        assert page["http"]["response"]["body"]["bytes"] == 2  # "w1"
        assert page["pyvs"].pop("upstream")["duration"] >= 0  # the server's own time (1 ms resolution)
        assert page["pyvs"] == {"listener": "web", "route": "main", "backend": "web", "server": "w1", "retries": 0}
        assert "upstream" not in by_path["/slow"]["pyvs"]  # 504: the server never answered
        assert "upstream" not in by_path["/hello"]["pyvs"]  # answered by pyvs itself
        assert page["event"]["duration"] >= 0 and page["@timestamp"].endswith("Z")
        assert by_path["/hello"]["pyvs"].get("backend") is None
        assert by_path["/dead"]["pyvs"]["server"] == "gone"
        assert by_path["/flaky"]["pyvs"]["server"] == "w1" and by_path["/flaky"]["pyvs"]["retries"] == 1
        assert by_path["/slow"]["pyvs"]["route"] == "slow"
        assert by_path["/ten"]["http"]["version"] == "1.0"
        assert {"/p1", "/p2"} <= set(by_path)
        assert by_path["/up"]["http"]["request"]["method"] == "POST"  # 413: refused before it started
        headless = [x for x in lines if "url" not in x]  # 400, 408: no request line to show
        assert sorted(x["http"]["response"]["status_code"] for x in headless) == [400, 408]
        assert [x["pyvs"].get("termination") for x in headless if x["http"]["response"]["status_code"] == 400] \
            == ["bad_request"]

        st = pyvs.wait_status(lambda s: s["totals"]["access_log_lines"] == 22)
        assert st["traffic"]["backends"]["flaky"][RETRIES] == 1  # per backend (pyvs_backend_retries_total)
        assert st["totals"]["access_log_dropped"] == 0
        pv = st["pageviews"]["vhosts"]["web"]
        assert pv["status"]["2xx"] == 16 and pv["status"]["5xx"] == 2
        assert pv["pv_by_prefix_last_hour"]["/page/"] == 10
        assert pv["uv_hour"] == 1
        assert pv["top_urls"][0] == {"path": "/hello", "pv": 2}
    finally:
        pyvs.stop()
        web.close()


def _hammer(port: int, n: int, conns: int) -> None:
    import concurrent.futures

    def one(k: int) -> None:
        urls = [f"http://127.0.0.1:{port}/c{k}/{i}" for i in range(n // conns)]
        out = curl(*[x for u in urls for x in ("-o", "/dev/null", u)])
        assert out.returncode == 0, out.stderr

    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        list(pool.map(one, range(conns)))


def test_two_workers_one_file_whole_lines_and_reopen_on_sigusr1(loop_thread: LoopThread, tmp_path: Path) -> None:
    web = Backend(loop_thread, "w1")
    port = free_port()
    log = tmp_path / "access.json"
    pyvs = Pyvs(_config(port, web, log), tmp_path, workers=2)
    try:
        _hammer(port, 400, 8)
        lines = _wait_lines(log, 400)
        assert len({x["url"]["path"] for x in lines}) == 400
        os.rename(log, tmp_path / "access.json.1")  # what logrotate does, then its postrotate:
        os.kill(pyvs.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not log.exists():  # a worker that reopens creates the new file at the path
            assert time.monotonic() < deadline, "no worker reopened its log"
            time.sleep(0.02)
        _hammer(port, 80, 4)
        rotated = tmp_path / "access.json.1"

        deadline = time.monotonic() + 10
        while True:  # every line of both rounds is in one file or the other, whole
            old = [json.loads(x) for x in _lines(rotated)]
            new = [json.loads(x) for x in _lines(log)]
            hammered = [x for x in old + new if x["url"]["path"].startswith("/c")]
            if len(hammered) >= 480:
                break
            assert time.monotonic() < deadline, f"{len(hammered)} of 480 lines"
            time.sleep(0.05)
        # /cK/i come twice for K < 4 and i < 20 (the second round)
        assert len(hammered) == 480 and len({x["url"]["path"] for x in hammered}) == 400
        first = {f"/c{k}/{i}" for k in range(8) for i in range(50)}
        assert first <= {x["url"]["path"] for x in old}  # written before the rotation: the old file
        assert any(x["url"]["path"].startswith("/c") for x in new)  # after it: the new one
        assert pyvs.proc.poll() is None  # SIGUSR1 did not kill anything
        assert all(w["ready"] for w in pyvs.status()["workers"])
    finally:
        pyvs.stop()
        web.close()


def _recv_until(sock: socket.socket, pred: Callable[[list[bytes]], bool], timeout: float = 10) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not pred(got):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            break
    return got


def test_syslog_udp_combined_format_and_a_listener_turned_off(loop_thread: LoopThread, tmp_path: Path) -> None:
    web = Backend(loop_thread, "w1")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port, quiet = free_port(), free_port()
    cfg = {
        "global": {"access_log": {"path": f"syslog://127.0.0.1:{rx.getsockname()[1]}", "format": "combined",
                                  "flush": "50ms", "facility": "local0", "tag": "pyvs-test"}},
        "listeners": [
            {"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "web"},
            {"name": "quiet", "bind": [f"127.0.0.1:{quiet}"], "backend": "web", "access_log": False},
        ],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path)
    try:
        assert curl("-A", "agent/1", f"http://127.0.0.1:{quiet}/not-logged").returncode == 0
        assert curl("-A", "agent/1", f"http://127.0.0.1:{port}/logged?a=1").returncode == 0
        got = _recv_until(rx, lambda g: len(g) >= 1)
        time.sleep(0.3)
        got += _recv_until(rx, lambda g: False, timeout=0.3)
        assert len(got) == 1, got
        m = re.fullmatch(
            rb'<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ pyvs-test \d+ - - '
            rb'127\.0\.0\.1 - - \[[^\]]+ \+0000\] "GET /logged\?a=1 HTTP/1\.1" 200 2 "-" "agent/1"',
            got[0])
        assert m is not None, got[0]
    finally:
        pyvs.stop()
        rx.close()
        web.close()


def test_cut_off_requests_and_a_full_disk(loop_thread: LoopThread, tmp_path: Path) -> None:
    """The client leaving before the answer (499, client_closed), the server dying
    mid-body (the status sent, aborted), and a log on a full disk (/dev/full): dropped and
    counted while the requests are served as usual."""
    web = Backend(loop_thread, "w1")
    port, full = free_port(), free_port()
    log = tmp_path / "access.json"
    cfg = {
        "listeners": [
            {"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "web",
             "access_log": {"path": str(log), "flush": "50ms"}},
            {"name": "full", "bind": [f"127.0.0.1:{full}"], "backend": "web",
             "access_log": {"path": "/dev/full", "flush": "50ms"}},
        ],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            seen = web.requests
            s.sendall(b"GET /slow?delay=1 HTTP/1.1\r\nHost: a\r\n\r\n")
            deadline = time.monotonic() + 10
            while web.requests == seen:  # the request is with the server
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # a reset, not a FIN: a half-closed client still gets its response (and a 200 line)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # a WebSocket: logged at its end
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 101")
        out = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/die")
        assert out.stdout == b"200" and out.returncode != 0  # the body was cut: curl sees it
        for i in range(30):
            assert curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{full}/f{i}").stdout == b"200"
        lines = _wait_lines(log, 3)
        by_path = {x["url"]["path"]: x for x in lines}
        assert by_path["/ws"]["http"]["response"]["status_code"] == 101 and "termination" not in by_path["/ws"]["pyvs"]
        gone = by_path["/slow"]
        assert gone["http"]["response"]["status_code"] == 499
        assert gone["pyvs"]["termination"] == "client_closed" and gone["pyvs"]["server"] == "w1"
        died = by_path["/die"]
        assert died["http"]["response"]["status_code"] == 200 and died["pyvs"]["termination"] == "aborted"
        st = pyvs.wait_status(lambda s: s["totals"]["access_log_dropped"] == 30)
        assert st["totals"]["access_log_lines"] == 3 and st["totals"]["requests"] >= 30
        time.sleep(0.3)
        assert len(_lines(log)) == 3  # one line each, no second line from the connection's close
    finally:
        pyvs.stop()
        web.close()


def test_a_log_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    cfg = {
        "global": {"workers": 2, "access_log": str(tmp_path / "missing" / "access.json")},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": f"127.0.0.1:{free_port()}"}]}],
    }
    path = tmp_path / "pyvs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pyvs.cli", "run", "-c", str(path)], capture_output=True,
                         timeout=30, check=False)
    assert out.returncode == 1
    assert b"access_log cannot open " + str(tmp_path / "missing" / "access.json").encode() in out.stderr

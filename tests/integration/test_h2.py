"""HTTP/2 front end end to end (docs/http2.md): curl and h2load as clients, a 2-worker
pyvs, aiohttp backends over pooled HTTP/1.1. h2c with prior knowledge on a plain
listener, h2 by ALPN on a TLS listener (certificates from trustme)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, pattern
from tests.unit.tls.pki import Pki

NAME = "h2.example.test"


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.pki = Pki(tmp / "pki")
        cert = self.pki.issue(NAME)
        self.web = Backend(lt, "web")
        self.plain, self.tls, self.h1only = free_port(), free_port(), free_port()
        cfg: dict[str, Any] = {
            "listeners": [
                {"name": "h2c", "bind": [f"127.0.0.1:{self.plain}"], "http2": True, "backend": "web",
                 "routes": [{"match": {"path_prefix": "/deny"}, "deny": {"status": 403}},
                            {"backend": "web", "response_headers": {"set": {"X-Via": "pyvs"}}}]},
                {"name": "h2", "bind": [f"127.0.0.1:{self.tls}"], "backend": "web",
                 "tls": {"certificates": [{"cert": cert.cert, "key": cert.key, "default": True}],
                         "alpn": ["h2", "http/1.1"]}},
                {"name": "h1", "bind": [f"127.0.0.1:{self.h1only}"], "backend": "web"},
            ],
            "backends": [{"name": "web", "servers": [{"name": "w1", "address": self.web.address}]}],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def h2c(self, path: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return curl("--http2-prior-knowledge", *args, f"http://127.0.0.1:{self.plain}{path}")

    def h2(self, path: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return curl("--http2", "--cacert", self.pki.ca_pem, "--resolve", f"{NAME}:{self.tls}:127.0.0.1", *args,
                    f"https://{NAME}:{self.tls}{path}")

    def close(self) -> None:
        self.pyvs.stop()
        self.web.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("h2"))
    yield e
    e.close()
    log = e.pyvs.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-5000:]


def test_h2c_prior_knowledge_get(env: Env) -> None:
    r = env.h2c("/name", "-i")
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    assert body == b"web"
    assert b"\r\nx-via: pyvs" in head and b"\r\nx-server: web" in head
    assert b"connection:" not in head.lower() and b"keep-alive" not in head.lower()


def test_forwarded_fields_and_authority_as_host(env: Env) -> None:
    r = env.h2c("/headers", "-H", "Cookie: a=1", "-H", "Cookie: b=2")
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert h["Host"] == f"127.0.0.1:{env.plain}"
    assert h["X-Forwarded-Proto"] == "http" and h["X-Forwarded-For"] == "127.0.0.1"
    assert h["Cookie"] == "a=1; b=2"
    r = env.h2("/headers")
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert h["X-Forwarded-Proto"] == "https" and h["Host"] == f"{NAME}:{env.tls}"


def test_h2_over_tls_by_alpn_and_http11_still_served(env: Env) -> None:
    for args in (("--tlsv1.2", "--tls-max", "1.2"), ("--tlsv1.3",)):
        r = env.h2("/name", *args, "-w", " %{http_version}")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"web 2"
    r = env.h2("/name", "--http1.1", "-w", " %{http_version}")
    assert r.stdout == b"web 1.1", r.stderr
    # h2c listener: HTTP/1.1 clients unchanged
    r = curl("-w", " %{http_version}", f"http://127.0.0.1:{env.plain}/name")
    assert r.stdout == b"web 1.1", r.stderr


def test_filters_replies_and_errors_over_h2(env: Env) -> None:
    r = env.h2c("/deny/x", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"403", r.stderr
    r = env.h2c("/status/503", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"503", r.stderr
    r = env.h2c("/name", "-I")
    assert r.returncode == 0 and r.stdout.startswith(b"HTTP/2 200"), r.stderr


def test_large_and_chunked_responses_byte_exact(env: Env) -> None:
    for path in ("/big?size=5000000", "/chunked?size=3000000"):
        r = env.h2c(path)
        assert r.returncode == 0, r.stderr
        size = int(path.split("=")[1])
        assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(pattern(size)).digest(), path
    r = env.h2("/big?size=2000000")
    assert r.returncode == 0 and r.stdout == pattern(2000000), r.stderr


def test_post_10mib_over_h2_byte_exact(env: Env, tmp_path: Path) -> None:
    data = pattern(10 * 1024 * 1024)
    f = tmp_path / "body"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    for run in (env.h2c, env.h2):
        r = run("/upload", "--data-binary", f"@{f}", "-H", "Content-Type: application/octet-stream")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"length": len(data), "sha256": want, "server": "web"}
    # Without a length (chunked to the server)
    r = env.h2c("/upload", "-T", str(f), "-H", "Transfer-Encoding:")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == want


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_100_streams_no_errors(env: Env) -> None:
    for url in (f"http://127.0.0.1:{env.plain}/name", f"https://127.0.0.1:{env.tls}/name"):
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "100", url],
                           capture_output=True, timeout=120, check=False)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      out)
        assert m is not None, out
        assert m.groups() == ("2000", "2000", "2000", "0", "0"), out
        assert "status codes: 2000 2xx" in out, out

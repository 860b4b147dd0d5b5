"""TLS towards servers (``servers[].tls``) and health checks over the same context."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.harness import LoopThread, Pyvs, curl, free_port
from tests.unit.tls.pki import Pki


class TlsBackend:
    """An aiohttp server over TLS that echoes the request's headers and SNI."""

    def __init__(self, lt: LoopThread, pki: Pki, name: str, *, client_ca: str | None = None) -> None:
        self.lt = lt
        self.port = free_port()
        cert = pki.issue(name)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert.cert, cert.key)
        self.snis: list[str | None] = []
        self.ctx.sni_callback = lambda obj, sni, ctx: self.snis.append(sni)  # type: ignore[func-returns-value]
        if client_ca is not None:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.checks = 0
        self.peers: set[Any] = set()  # client ends of the proxied (not health-check) connections
        self.runner: web.AppRunner | None = None
        lt.run(self._start())

    async def _start(self) -> None:
        async def echo(request: web.Request) -> web.Response:
            if request.path == "/healthz":
                self.checks += 1
            elif request.transport is not None:
                self.peers.add(request.transport.get_extra_info("peername"))
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            return web.json_response({"headers": dict(request.headers), "peer": bool(peer)})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ctx).start()

    def close(self) -> None:
        if self.runner is not None:
            self.lt.run(self.runner.cleanup())


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.pki = Pki(tmp / "pki")
        clients = Pki(tmp / "clients", "client CA")
        proxy_cert = clients.issue("pyvs.internal", common_name="pyvs")
        self.good = TlsBackend(lt, self.pki, "backend.internal")
        self.mtls = TlsBackend(lt, self.pki, "secure.internal", client_ca=clients.ca_pem)
        self.port = free_port()
        health = {"type": "http", "path": "/healthz", "interval": "100ms", "timeout": "2s", "rise": 1, "fall": 1}
        ca = self.pki.ca_pem
        cfg: dict[str, Any] = {
            "listeners": [{"name": "web", "bind": [f"127.0.0.1:{self.port}"], "routes": [
                {"match": {"path_prefix": "/wrong"}, "backend": "wrong"},
                {"match": {"path_prefix": "/insecure"}, "backend": "insecure"},
                {"match": {"path_prefix": "/mtls"}, "backend": "mtls"},
                {"backend": "good"}]}],
            "backends": [
                {"name": "good", "health": health, "servers": [
                    {"name": "g1", "address": f"127.0.0.1:{self.good.port}",
                     "tls": {"ca": ca, "sni": "backend.internal"}}]},
                {"name": "wrong", "retries": 0, "servers": [  # verified against a name it does not have
                    {"name": "w1", "address": f"127.0.0.1:{self.good.port}",
                     "tls": {"ca": ca, "sni": "other.internal"}}]},
                {"name": "insecure", "servers": [
                    {"name": "i1", "address": f"127.0.0.1:{self.good.port}", "tls": {"verify": False}}]},
                {"name": "mtls", "servers": [
                    {"name": "m1", "address": f"127.0.0.1:{self.mtls.port}",
                     "tls": {"ca": ca, "sni": "secure.internal", "cert": proxy_cert.cert, "key": proxy_cert.key}}]},
            ],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def close(self) -> None:
        self.pyvs.stop()
        self.good.close()
        self.mtls.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("tlsup"))
    yield e
    e.close()


def test_verified_tls_to_the_server_with_sni(env: Env) -> None:
    r = curl(f"http://127.0.0.1:{env.port}/x")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["headers"]["X-Forwarded-Proto"] == "http"
    assert "backend.internal" in env.good.snis
    # Pooled TLS connections are reused: many requests, at most one connection per worker
    env.good.peers.clear()
    for _ in range(20):
        assert curl(f"http://127.0.0.1:{env.port}/y").returncode == 0
    assert 1 <= len(env.good.peers) <= 2


def test_a_certificate_that_does_not_verify_is_a_bad_gateway(env: Env) -> None:
    r = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{env.port}/wrong")
    assert r.stdout in (b"502", b"503")
    r = curl(f"http://127.0.0.1:{env.port}/insecure")  # verify: false connects anyway
    assert json.loads(r.stdout)["headers"]["Host"] == f"127.0.0.1:{env.port}"


def test_client_certificate_towards_the_server(env: Env) -> None:
    r = curl(f"http://127.0.0.1:{env.port}/mtls")
    assert r.returncode == 0 and json.loads(r.stdout)["peer"] is True


def test_health_checks_use_the_server_tls_context(env: Env) -> None:
    deadline = time.monotonic() + 10
    while env.good.checks < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.good.checks >= 2
    backend = next(b for b in env.pyvs.status()["backends"] if b["name"] == "good")
    server = next(s for s in backend["servers"] if s["name"] == "g1")
    assert server["health"]["state"] == "UP" and server["health"]["last_check"]["ok"], server

"""The admin endpoint with ``admin.token_file``: a real pyvs, real HTTP requests.

The harness's :class:`Pyvs` reads ``/status`` without credentials (and waits for the
workers through it), so :class:`TokenPyvs` below sends the bearer token instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, free_port

TOKEN = "0123456789abcdef-admin-TOKEN_for.tests~"


def admin_get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` (never through a proxy); (status, headers, body), also for 4xx."""
    req = urllib.request.Request(url)
    if authorization is not None:
        req.add_header("Authorization", authorization)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


class TokenPyvs(Pyvs):
    """A :class:`Pyvs` whose admin endpoint requires ``token``; reads /status with it."""

    def __init__(self, config: dict[str, Any], tmp: Path, token: str) -> None:
        self.token = token
        super().__init__(config, tmp)

    @property
    def admin_url(self) -> str:
        return f"http://{self.config['admin']['listen']}"

    def status(self) -> dict[str, Any]:
        code, _, body = admin_get(self.admin_url + "/status", f"Bearer {self.token}")
        if code != 200:
            raise OSError(f"/status answered {code}")
        data: dict[str, Any] = json.loads(body)
        return data


@pytest.fixture(scope="module")
def pyvs(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenPyvs]:
    tmp = tmp_path_factory.mktemp("admin-token")
    token_file = tmp / "admin.token"
    token_file.write_text(f"\n  {TOKEN}  \n")  # whitespace around it is stripped
    token_file.chmod(0o600)
    backend = Backend(loop_thread, "a")
    config: dict[str, Any] = {
        "admin": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token_file)},
        "listeners": [{"name": "web", "mode": "http", "bind": [f"127.0.0.1:{free_port()}"], "backend": "app"}],
        "backends": [{"name": "app", "servers": [{"name": "a", "address": backend.address}]}],
    }
    p = TokenPyvs(config, tmp, TOKEN)
    try:
        yield p
    finally:
        p.stop()
        backend.close()


PATHS = ["/status", "/metrics", "/", "/nope"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        TOKEN,
    ],
    ids=["none", "empty", "scheme-only", "scheme-space", "wrong", "longer", "shorter", "basic", "other-scheme", "bare"],
)
def test_without_the_right_token_401(pyvs: TokenPyvs, path: str, authorization: str | None) -> None:
    code, headers, body = admin_get(pyvs.admin_url + path, authorization)
    assert code == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert b"workers" not in body and b"pyvs_" not in body  # nothing of the status leaks


def test_status_with_the_token(pyvs: TokenPyvs) -> None:
    code, headers, body = admin_get(pyvs.admin_url + "/status", f"Bearer {TOKEN}")
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    st = json.loads(body)
    assert st["workers"] and all(w["ready"] for w in st["workers"])


def test_metrics_with_the_token(pyvs: TokenPyvs) -> None:
    code, headers, body = admin_get(pyvs.admin_url + "/metrics", f"Bearer {TOKEN}")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"pyvs_" in body


@pytest.mark.parametrize("authorization", [f"bearer {TOKEN}", f"BEARER   {TOKEN}  "])
def test_scheme_is_case_insensitive(pyvs: TokenPyvs, authorization: str) -> None:
    # RFC 9110 11.1: the auth scheme is case-insensitive.
    code, _, _ = admin_get(pyvs.admin_url + "/status", authorization)
    assert code == 200


def test_unknown_path_with_the_token_is_404(pyvs: TokenPyvs) -> None:
    code, _, _ = admin_get(pyvs.admin_url + "/nope", f"Bearer {TOKEN}")
    assert code == 404

"""The dashboard in headless Chromium (Debian's ``chromium``, driven by playwright).

The page is loaded from a real pyvs, numbers must move while curl sends traffic, and
a click on "drain" must show the server as DRAIN (and the API must agree).
Screenshots are kept under ``$PYVS_ARTEFACTS`` (default: ``build/artefacts``) as
``dashboard-*.png``. Every request Chromium makes is checked to go to the admin
endpoint: the page fetches nothing from anywhere else.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, Backend, LoopThread, Pyvs, curl, free_port

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(os.environ.get("PYVS_ARTEFACTS", ROOT / "build" / "artefacts"))

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: "
                                      "pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def env(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    assert shutil.which("chromium") or os.path.exists(CHROMIUM), \
        "chromium is missing: `make deps` installs it (APT_TEST)"
    tmp = tmp_path_factory.mktemp("dashboard")
    a, b = Backend(loop_thread, "a"), Backend(loop_thread, "b")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{port}"], "backend": "app"}],
        "backends": [{"name": "app", "servers": [{"name": "a", "address": a.address},
                                                  {"name": "b", "address": b.address}]}],
    }
    pyvs = Pyvs(cfg, tmp, workers=2)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield {"pyvs": pyvs, "port": port}
    finally:
        pyvs.stop()
        a.close()
        b.close()


def test_dashboard_live_numbers_and_drain(env: dict[str, Any]) -> None:
    pyvs, port = env["pyvs"], env["port"]
    admin = f"http://127.0.0.1:{pyvs.admin_port}"
    foreign: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            curl(*[f"http://127.0.0.1:{port}/name"] * 50)

    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda r: None if r.url.startswith(admin) else foreign.append(r.url))
            page.goto(admin + "/", timeout=30_000)
            page.wait_for_selector("#conn.live", timeout=30_000)
            page.wait_for_selector('#servers tr[data-server="a"] td.state', timeout=30_000)
            assert page.title() == "pyvs dashboard"
            page.screenshot(path=str(ARTEFACTS / "dashboard-idle.png"), full_page=True)

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            try:
                # the request rate and the total move under load
                page.wait_for_function("() => parseFloat(document.getElementById('rps').textContent"
                                       ".replace(/,/g, '')) > 0", timeout=30_000)
                first = int(page.inner_text("#total").replace(",", ""))
                page.wait_for_function(f"() => parseInt(document.getElementById('total').textContent"
                                       f".replace(/,/g, '')) > {first}", timeout=30_000)
                # latency per listener and backend (the workers' histograms, over the last seconds)
                page.wait_for_function("() => document.querySelector('#listeners tbody tr td:nth-child(8)')"
                                       ".textContent.endsWith(' ms')", timeout=30_000)
                page.wait_for_function("() => document.querySelector('#backends tbody tr td:nth-child(7)')"
                                       ".textContent.endsWith(' ms')", timeout=30_000)
                page.screenshot(path=str(ARTEFACTS / "dashboard-load.png"), full_page=True)
            finally:
                stop.set()
                loader.join(60)

            page.click('#servers tr[data-server="a"] button[data-act="drain"]')
            page.wait_for_function("() => document.querySelector('#servers tr[data-server=\"a\"] td.state')"
                                   ".textContent === 'DRAIN'", timeout=30_000)
            page.screenshot(path=str(ARTEFACTS / "dashboard-drain.png"), full_page=True)
            servers = {s["name"]: s for b in pyvs.status()["backends"] for s in b["servers"]}
            assert servers["a"]["state"] == "DRAIN"

            page.fill('#servers tr[data-server="b"] input.w', "3")
            page.click('#servers tr[data-server="b"] button[data-act="weight"]')
            page.wait_for_function("() => document.getElementById('msg').textContent.includes('weight done')",
                                   timeout=30_000)
            page.click('#servers tr[data-server="a"] button[data-act="enable"]')
            page.wait_for_function("() => document.querySelector('#servers tr[data-server=\"a\"] td.state')"
                                   ".textContent === 'UP'", timeout=30_000)
        finally:
            browser.close()
    assert foreign == [], f"the dashboard fetched from elsewhere: {foreign}"


class TokenPyvs(Pyvs):
    """A pyvs whose admin endpoint requires a token (the harness reads /status with it)."""

    token = ""

    def status(self) -> dict[str, Any]:
        import json
        import urllib.request

        req = urllib.request.Request(f"http://{self.config['admin']['listen']}/status",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data


def test_dashboard_with_a_token_signs_in(loop_thread: LoopThread, tmp_path: Path) -> None:
    TokenPyvs.token = "dashboard-token-0123456789"
    token_file = tmp_path / "admin.token"
    token_file.write_text(TokenPyvs.token)
    token_file.chmod(0o600)
    a = Backend(loop_thread, "a")
    admin_port = free_port()
    cfg: dict[str, Any] = {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": str(token_file)},
        "listeners": [{"name": "web", "bind": [f"127.0.0.1:{free_port()}"], "backend": "app"}],
        "backends": [{"name": "app", "servers": [{"name": "a", "address": a.address}]}],
    }
    pyvs = TokenPyvs(cfg, tmp_path, workers=2)
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        with playwright_sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                resp = page.goto(admin + "/", timeout=30_000)
                assert resp is not None and resp.status == 401
                page.fill("#token", "wrong")
                page.click("#signin")
                page.wait_for_selector(".err", timeout=30_000)
                page.fill("#token", TokenPyvs.token)
                page.click("#signin")
                page.wait_for_selector("#conn.live", timeout=30_000)
                cookies = {c["name"]: c for c in page.context.cookies()}
                assert cookies["pyvs_admin"]["httpOnly"] and cookies["pyvs_admin"]["value"] != TokenPyvs.token
                page.click('#servers tr[data-server="a"] button[data-act="drain"]')
                page.wait_for_function("() => document.querySelector('#servers tr[data-server=\"a\"] td.state')"
                                       ".textContent === 'DRAIN'", timeout=30_000)
                page.screenshot(path=str(ARTEFACTS / "dashboard-token.png"), full_page=True)
            finally:
                browser.close()
        r = curl("-o", "/dev/null", "-w", "%{http_code}", admin + "/status")
        assert r.stdout == b"401"  # the cookie is the browser's; nothing else changed
    finally:
        pyvs.stop()
        a.close()

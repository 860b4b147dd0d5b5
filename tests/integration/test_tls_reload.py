"""Certificates reload: a changed file is served after an automatic reload, a broken one
is refused (the running certificate stays, the log says why), and a reload renews the
session-ticket keys (but those of a ticket_key_file)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port
from tests.integration.test_tls import get
from tests.unit.tls.pki import Pki

NAME = "a.example.test"


def serial_seen(pki: Pki, port: int) -> bytes:
    import ssl

    conn, data = get(ssl.create_default_context(cafile=pki.ca_pem), port, NAME, "/name")
    assert data.endswith(b"web"), data
    return conn.cert


def der(cert_file: str) -> bytes:
    """The DER form of the first certificate of a PEM file (what a client is shown)."""
    import ssl

    pem = Path(cert_file).read_text()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[:end] + "\n")


def wait_for(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_changed_certificate_is_served_and_a_broken_one_is_not(tmp_path: Path, loop_thread: LoopThread) -> None:
    pki = Pki(tmp_path / "pki")
    first = pki.issue(NAME)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first.cert, live_cert)
    shutil.copy(first.key, live_key)
    web = Backend(loop_thread, "web")
    port = free_port()
    cfg: dict[str, Any] = {
        "listeners": [{"name": "tls", "bind": [f"127.0.0.1:{port}"], "backend": "web",
                       "tls": {"certificates": [{"cert": str(live_cert), "key": str(live_key)}],
                               "watch_interval": "100ms"}}],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    try:
        assert serial_seen(pki, port) == der(first.cert)
        # A new certificate and key, written one after the other (a reload may see the
        # certificate before the key: refused, then taken once the key follows)
        second = pki.issue(NAME)
        shutil.copy(second.cert, live_cert)
        shutil.copy(second.key, live_key)
        wait_for(lambda: pyvs.status()["generation"] == 1)
        wait_for(lambda: pyvs.log.read_text().count("after the reload") == 2)  # generation 0 is gone
        assert serial_seen(pki, port) == der(second.cert)
        # A broken file: the reload is refused, the running certificate stays
        refusals = pyvs.log.read_text().count("the changed certificate(s) are not used")
        live_key.write_text("not a key\n")
        wait_for(lambda: pyvs.log.read_text().count("the changed certificate(s) are not used") > refusals)
        log = pyvs.log.read_text()
        assert f"listeners[0].tls.certificates[0]: {live_key}: no PEM private key in it" in log
        assert pyvs.status()["generation"] == 1
        assert serial_seen(pki, port) == der(second.cert)
        assert curl("--cacert", pki.ca_pem, "--resolve", f"{NAME}:{port}:127.0.0.1",
                    f"https://{NAME}:{port}/name").stdout == b"web"
        # Fixed again: taken
        shutil.copy(second.key, live_key)
        wait_for(lambda: pyvs.status()["generation"] == 2)
    finally:
        pyvs.stop()
        web.close()


def test_reload_renews_the_ticket_keys_unless_a_key_file(tmp_path: Path, loop_thread: LoopThread) -> None:
    """A reload draws new ticket keys (what it revokes, a replaced client CA say, must
    stop resuming), rotating ones and OpenSSL's own alike; keys from a
    ``ticket_key_file`` survive it (several nodes, or reloads, share them)."""
    import os
    import ssl

    pki = Pki(tmp_path / "pki")
    cert = pki.issue(NAME)
    web = Backend(loop_thread, "web")
    keyfile = tmp_path / "ticket.key"
    keyfile.write_bytes(os.urandom(80))
    ports = {"tls": free_port(), "fixed": free_port(), "keyfile": free_port()}
    tls = {"certificates": [{"cert": cert.cert, "key": cert.key}]}
    extra: dict[str, dict[str, Any]] = {"tls": {}, "fixed": {"ticket_rotation": 0},
                                        "keyfile": {"ticket_key_file": str(keyfile)}}
    cfg: dict[str, Any] = {
        "listeners": [{"name": n, "bind": [f"127.0.0.1:{p}"], "backend": "web", "tls": {**tls, **extra[n]}}
                      for n, p in ports.items()],
        "backends": [{"name": "web", "servers": [{"name": "w1", "address": web.address}]}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    try:
        ctx = ssl.create_default_context(cafile=pki.ca_pem)
        sessions = {}
        for n, p in ports.items():
            conn, _ = get(ctx, p, NAME, "/name")
            assert get(ctx, p, NAME, "/name", conn.session)[0].session_reused, n
            sessions[n] = conn.session
        pyvs.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: pyvs.log.read_text().count("after the reload") == 2)  # the old workers are gone
        for n, p in ports.items():
            again, data = get(ctx, p, NAME, "/name", sessions[n])
            assert data.endswith(b"web")
            assert again.session_reused == (n == "keyfile"), n  # new keys: a full handshake, but the key file's
            assert get(ctx, p, NAME, "/name", again.session)[0].session_reused, n
    finally:
        pyvs.stop()
        web.close()

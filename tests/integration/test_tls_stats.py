"""TLS counters end to end (pyvs/tls/stats.py): a 2-worker pyvs, real curl and
``openssl s_client`` as clients, certificates from trustme; /status's ``tls`` object
and the ``pyvs_tls_*`` families of /metrics.

Every test owns its listener(s), so each can expect exact counts."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvs.tls import stats
from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port
from tests.unit.tls.pki import Pki

A = "a.example.test"
B = "b.example.test"


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.tmp = tmp
        self.pki = Pki(tmp / "pki")
        self.clients = Pki(tmp / "clients", "pyvs client CA")
        cert_a = self.pki.issue(A)
        cert_b = self.pki.issue(B)
        self.alice = self.clients.issue("alice.clients.test", common_name="alice")
        self.stranger = self.pki.issue("stranger.test")  # signed by the server CA, not the client CA
        self.web = Backend(lt, "web")
        names = ("resume", "alpn", "edge", "strict", "mtls", "rot", "notickets")
        self.ports = {n: free_port() for n in names}
        a = {"cert": cert_a.cert, "key": cert_a.key}

        def lst(name: str, tls: dict[str, Any]) -> dict[str, Any]:
            return {"name": name, "bind": [f"127.0.0.1:{self.ports[name]}"], "tls": tls,
                    "routes": [{"backend": "web", "request_headers": {"set": {"X-Rid": "%{request_id}"}}}]}

        cfg: dict[str, Any] = {
            "listeners": [
                lst("resume", {"certificates": [a]}),
                lst("alpn", {"certificates": [a], "alpn": ["h2", "http/1.1"]}),
                lst("edge", {"certificates": [a], "handshake_timeout": "300ms"}),
                # No default certificate: a name it has no certificate for is refused.
                lst("strict", {"certificates": [a, {"cert": cert_b.cert, "key": cert_b.key}]}),
                lst("mtls", {"certificates": [a], "client_ca": self.clients.ca_pem}),
                lst("rot", {"certificates": [a], "ticket_rotation": "1s"}),
                lst("notickets", {"certificates": [a], "session_tickets": False}),
            ],
            "backends": [{"name": "web", "servers": [{"name": "w1", "address": self.web.address}]}],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def curl(self, listener: str, *args: str, name: str = A) -> subprocess.CompletedProcess[bytes]:
        port = self.ports[listener]
        return curl("--resolve", f"{name}:{port}:127.0.0.1", *args, f"https://{name}:{port}/name")

    def s_client(self, listener: str, *args: str, request: bytes = b"") -> str:
        """openssl s_client on ``listener``; ``request`` is sent, then s_client waits
        for the server to close (``-ign_eof``)."""
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.ports[listener]}",
                            "-CAfile", self.pki.ca_pem, *args, *(["-ign_eof"] if request else [])],
                           input=request, capture_output=True, timeout=30)
        return (r.stdout + r.stderr).decode(errors="replace")

    def tls(self, pred: Any, timeout: float = 10) -> dict[str, Any]:
        """/status's tls object once ``pred`` holds on it (counters arrive every 100ms)."""
        st = self.pyvs.wait_status(lambda s: "tls" in s and pred(s["tls"]), timeout=timeout)
        out: dict[str, Any] = st["tls"]
        return out

    def close(self) -> None:
        self.pyvs.stop()
        self.web.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("tlsstats"))
    yield e
    e.close()


def _request(name: str = A) -> bytes:
    return f"GET /headers HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()


def _worker(out: str) -> str:
    """The pid of the worker that served a request (the request id the backend echoed)."""
    m = re.search(r'"X-Rid": "([0-9a-f]+)-', out)
    assert m, out
    return m.group(1)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_full_and_resumed_handshakes_are_summed_over_both_workers(env: Env, version: str) -> None:
    sess = env.tmp / f"session{version}.pem"
    before = env.tls(lambda t: True)["listeners"]["resume"]
    out = env.s_client("resume", version, "-servername", A, "-sess_out", str(sess), request=_request())
    assert "New, TLSv1." in out, out
    pids = {_worker(out)}
    resumed = 0
    for _ in range(60):  # until the kernel gave a resumed connection to each worker
        out = env.s_client("resume", version, "-servername", A, "-sess_in", str(sess), request=_request())
        assert "Reused, TLSv1." in out, out
        resumed += 1
        pids.add(_worker(out))
        if len(pids) == 2:
            break
    assert len(pids) == 2, "the kernel never gave a connection to the other worker"
    n = resumed + 1
    want_v13 = n if version == "-tls1_3" else 0
    t = env.tls(lambda t: t["listeners"]["resume"]["handshakes"] >= before["handshakes"] + n)
    got = t["listeners"]["resume"]
    assert got["handshakes"] == before["handshakes"] + n
    assert got["resumed"] == before["resumed"] + resumed
    assert got["failed"] == before["failed"] == 0
    assert got["versions"]["TLSv1.3"] == before["versions"]["TLSv1.3"] + want_v13
    assert got["versions"]["TLSv1.2"] == before["versions"]["TLSv1.2"] + n - want_v13
    assert got["alpn"] is None  # one protocol offered: not counted
    assert got["session_tickets"] == "rotating" and got["ticket_rotation"] == 3600
    assert t["total"]["handshakes"] >= got["handshakes"]
    assert t["ticket_helper"] is True and t["ticket_helper_reason"] is None
    # Every resumption on these listeners is one by the rotating keys (the C helper's
    # counters, without those of its self-test that the workers inherit)
    assert t["tickets"]["resumed"] + t["tickets"]["renewed"] == t["total"]["resumed"]
    assert t["tickets"]["issued"] >= 1


def _failures(t: dict[str, Any], listener: str) -> dict[str, int]:
    return {k: v for k, v in t["listeners"][listener]["failures"].items() if v}


def test_refused_handshakes_are_counted_by_reason(env: Env) -> None:
    # TLS 1.0 only: protocol_version alert
    out = env.s_client("edge", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "alert protocol version" in out, out
    # TLS 1.2 with only a suite the profile does not offer (no forward secrecy)
    out = env.s_client("edge", "-tls1_2", "-cipher", "AES128-SHA")
    assert "handshake failure" in out, out
    # Plain HTTP on the TLS port
    with socket.create_connection(("127.0.0.1", env.ports["edge"]), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(100):
            pass
    # A client that says nothing: closed at the handshake timeout (300ms)
    with socket.create_connection(("127.0.0.1", env.ports["edge"]), timeout=10) as s:
        assert s.recv(100) == b""
    # A client that goes away in the middle: after a part of its ClientHello, and at once
    hello = _client_hello()
    with socket.create_connection(("127.0.0.1", env.ports["edge"]), timeout=10) as s:
        s.sendall(hello[: len(hello) // 2])
    socket.create_connection(("127.0.0.1", env.ports["edge"]), timeout=10).close()
    # A client that does not trust our certificate (curl without our CA): unknown_ca alert
    r = env.curl("edge")
    assert r.returncode == 60, r.stderr
    want = {"version": 1, "cipher": 1, "not_tls": 1, "timeout": 1, "aborted": 2, "peer_alert": 1}
    t = env.tls(lambda t: t["listeners"]["edge"]["failed"] >= 7)
    assert _failures(t, "edge") == want
    assert t["listeners"]["edge"]["failed"] == 7 and t["listeners"]["edge"]["handshakes"] == 0
    # ... and the listener still serves
    assert env.curl("edge", "--cacert", env.pki.ca_pem).stdout == b"web"
    env.tls(lambda t: t["listeners"]["edge"]["handshakes"] == 1)


def _client_hello() -> bytes:
    """The first flight of a real TLS client (Python's, over memory BIOs)."""
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=A)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_unknown_name_without_default_certificate_is_an_sni_failure(env: Env) -> None:
    r = env.curl("strict", "--cacert", env.pki.ca_pem, name="unknown.example.test")
    assert r.returncode == 35 and b"unrecognized name" in r.stderr, r.stderr
    out = env.s_client("strict", "-noservername")  # no SNI at all: refused too
    assert "unrecognized name" in out, out
    assert env.curl("strict", "--cacert", env.pki.ca_pem, name=B).stdout == b"web"
    t = env.tls(lambda t: t["listeners"]["strict"]["failed"] >= 2 and t["listeners"]["strict"]["handshakes"] >= 1)
    assert _failures(t, "strict") == {"sni": 2}
    assert t["listeners"]["strict"]["handshakes"] == 1


def test_client_certificate_failures_with_mtls(env: Env) -> None:
    base = ("--cacert", env.pki.ca_pem)
    assert env.curl("mtls", *base).returncode != 0  # no certificate
    assert env.curl("mtls", *base, "--cert", env.stranger.cert, "--key", env.stranger.key).returncode != 0
    r = env.curl("mtls", *base, "--cert", env.alice.cert, "--key", env.alice.key)
    assert r.stdout == b"web", r.stderr
    t = env.tls(lambda t: t["listeners"]["mtls"]["failed"] >= 2 and t["listeners"]["mtls"]["handshakes"] >= 1)
    assert _failures(t, "mtls") == {"client_cert": 2}
    assert t["listeners"]["mtls"]["handshakes"] == 1


def test_alpn_counts(env: Env) -> None:
    base = ("--cacert", env.pki.ca_pem, "-w", " %{http_version}")
    assert env.curl("alpn", *base, "--http2").stdout == b"web 2"
    assert env.curl("alpn", *base, "--http1.1").stdout == b"web 1.1"
    out = env.s_client("alpn", "-servername", A, request=_request())  # no ALPN offered
    assert "No ALPN negotiated" in out, out
    t = env.tls(lambda t: t["listeners"]["alpn"]["handshakes"] >= 3)
    got = t["listeners"]["alpn"]
    assert got["handshakes"] == 3 and got["alpn"] == {"h2": 1, "http/1.1": 1}
    assert t["total"]["alpn"]["h2"] == 1


def test_ticket_keys_rotation_and_modes(env: Env) -> None:
    t = env.tls(lambda t: t["listeners"]["rot"]["ticket_key_rotations"] >= 1, timeout=10)
    rot = t["listeners"]["rot"]
    assert rot["session_tickets"] == "rotating" and rot["ticket_rotation"] == 1
    assert t["listeners"]["notickets"]["session_tickets"] == "off"
    assert t["listeners"]["notickets"]["ticket_rotation"] is None
    assert t["listeners"]["resume"]["ticket_key_rotations"] <= 1  # (1h period: 1 if an hour began since the start)
    assert t["ticket_helper"] is True


def test_metrics_export_the_tls_families(env: Env) -> None:
    assert env.curl("notickets", "--cacert", env.pki.ca_pem).stdout == b"web"
    env.tls(lambda t: t["listeners"]["notickets"]["handshakes"] >= 1)
    with urllib.request.urlopen(f"http://127.0.0.1:{env.pyvs.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family, kind in (("pyvs_tls_handshakes_total", "counter"), ("pyvs_tls_handshake_failures_total", "counter"),
                         ("pyvs_tls_sessions_resumed_total", "counter"),
                         ("pyvs_tls_protocol_versions_total", "counter"), ("pyvs_tls_alpn_total", "counter"),
                         ("pyvs_tls_ticket_key_rotations_total", "counter"), ("pyvs_tls_tickets_total", "counter"),
                         ("pyvs_tls_ticket_helper", "gauge")):
        assert f"# TYPE {family} {kind}\n" in text, family
    assert 'pyvs_tls_handshakes_total{listener="notickets",result="completed"} 1\n' in text
    assert 'pyvs_tls_handshakes_total{listener="notickets",result="failed"} 0\n' in text
    assert 'pyvs_tls_handshake_failures_total{listener="notickets",reason="client_cert"} 0\n' in text
    assert re.search(r'^pyvs_tls_protocol_versions_total\{listener="notickets",version="TLSv1.3"\} 1$', text, re.M)
    assert "pyvs_tls_ticket_helper 1\n" in text


def test_reasons_of_openssl_errors() -> None:
    def err(reason: str, cls: type[ssl.SSLError] = ssl.SSLError) -> ssl.SSLError:
        e = cls(1, reason)
        e.reason = reason
        return e

    assert stats.REASONS[stats.reason_of(err("UNSUPPORTED_PROTOCOL"))] == "version"
    assert stats.REASONS[stats.reason_of(err("NO_SHARED_CIPHER"))] == "cipher"
    assert stats.REASONS[stats.reason_of(err("CALLBACK_FAILED"))] == "sni"
    assert stats.REASONS[stats.reason_of(err("x", ssl.SSLCertVerificationError))] == "client_cert"
    assert stats.REASONS[stats.reason_of(err("TLSV1_ALERT_UNKNOWN_CA"))] == "peer_alert"
    assert stats.REASONS[stats.reason_of(err("HTTP_REQUEST"))] == "not_tls"
    assert stats.REASONS[stats.reason_of(err("SOMETHING_NEW"))] == "other"
    assert stats.REASONS[stats.reason_of(ConnectionAbortedError())] == "timeout"
    assert stats.REASONS[stats.reason_of(ConnectionResetError())] == "aborted"
    assert stats.REASONS[stats.reason_of(None)] == "aborted"
    assert stats.aggregate([], []) == {}  # no TLS listener: no "tls" in /status

"""TLS termination end to end: a 2-worker pyvs with certificates from trustme, curl and
Python's ssl as clients, real aiohttp backends (docs/tls.md)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, LoopThread, Pyvs, curl, free_port, pattern
from tests.unit.tls.pki import Pki

A = "a.example.test"  # certificate A: a.example.test and *.wild.example.test
B = "b.example.test"  # certificate B (the default of the main listener)
ROTATION = 2  # seconds: ticket_rotation of the "rot" listener


class Env:
    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.pki = Pki(tmp / "pki")
        self.clients = Pki(tmp / "clients", "pyvs client CA")
        ca, cl = self.pki, self.clients
        cert_a = ca.issue(A, "*.wild.example.test")
        cert_b = ca.issue(B)
        self.alice = cl.issue("alice.clients.test", common_name="alice")
        self.web = Backend(lt, "web")
        self.other = Backend(lt, "other")
        self.port, self.strict, self.mtls, self.plain, self.rot = (free_port() for _ in range(5))
        echo = {"set": {"X-Tls-Version": "%{tls_version}", "X-Tls-Sni": "%{tls_sni}",
                        "X-Tls-Cipher": "%{tls_cipher}", "X-Rid": "%{request_id}"}}
        certs = [{"cert": cert_a.cert, "key": cert_a.key}, {"cert": cert_b.cert, "key": cert_b.key, "default": True}]
        cfg: dict[str, Any] = {
            "listeners": [
                {"name": "tls", "bind": [f"127.0.0.1:{self.port}"],
                 "tls": {"certificates": certs, "hsts": {"max_age": "1d", "include_subdomains": True}},
                 "routes": [
                     {"match": {"path": "/v13", "tls_version": ["1.3"]}, "backend": "other"},
                     {"match": {"path": "/sni", "sni": B}, "backend": "other"},
                     {"match": {"path": "/cipher", "tls_cipher": "~GCM|CHACHA"}, "backend": "other"},
                     {"match": {"path": "/over", "tls": False}, "backend": "other"},
                     {"backend": "web", "request_headers": echo}]},
                # No default certificate: unknown names (and no SNI) are refused.
                {"name": "strict", "bind": [f"127.0.0.1:{self.strict}"], "backend": "web",
                 "tls": {"certificates": [{"cert": cert_a.cert, "key": cert_a.key},
                                          {"cert": cert_b.cert, "key": cert_b.key}], "profile": "modern",
                         "handshake_timeout": "300ms"}},
                {"name": "mtls", "bind": [f"127.0.0.1:{self.mtls}"], "backend": "web",
                 "tls": {"certificates": [{"cert": cert_a.cert, "key": cert_a.key}],
                         "client_ca": cl.ca_pem, "client_subject_header": "X-Client-DN"}},
                {"name": "plain", "bind": [f"127.0.0.1:{self.plain}"], "redirect_https": self.port},
                # Ticket keys that change every ROTATION seconds (pyvs/tls/tickets.py).
                {"name": "rot", "bind": [f"127.0.0.1:{self.rot}"],
                 "routes": [{"backend": "web", "request_headers": {"set": {"X-Rid": "%{request_id}"}}}],
                 "tls": {"certificates": [{"cert": cert_a.cert, "key": cert_a.key}],
                         "ticket_rotation": f"{ROTATION}s"}},
            ],
            "backends": [
                {"name": "web", "servers": [{"name": "w1", "address": self.web.address}]},
                {"name": "other", "servers": [{"name": "o1", "address": self.other.address}]},
            ],
        }
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def curl(self, name: str, path: str = "/name", *args: str,
             port: int | None = None) -> subprocess.CompletedProcess[bytes]:
        port = port or self.port
        return curl("--cacert", self.pki.ca_pem, "--resolve", f"{name}:{port}:127.0.0.1", *args,
                    f"https://{name}:{port}{path}")

    def context(self, **kw: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.pki.ca_pem)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def close(self) -> None:
        self.pyvs.stop()
        self.web.close()
        self.other.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Env]:
    e = Env(loop_thread, tmp_path_factory.mktemp("tls"))
    yield e
    e.close()


class Conn:
    """What a client learnt from one TLS connection."""

    def __init__(self, s: ssl.SSLSocket) -> None:
        self.alpn = s.selected_alpn_protocol()
        self.session = s.session
        self.session_reused = s.session_reused
        self.version = s.version()
        self.cert = s.getpeercert(binary_form=True)


def get(ctx: ssl.SSLContext, port: int, name: str | None, path: str = "/headers",
        session: ssl.SSLSession | None = None) -> tuple[Conn, bytes]:
    """One request on a new TLS connection (closed by the server after it)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=name, session=session)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), (name or A).encode()))
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    conn = Conn(s)  # (the session of TLS 1.3 arrives after the handshake: read it last)
    s.close()
    return conn, data


def body_json(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return out


def test_first_request_right_after_start_and_sni_picks_the_certificate(env: Env) -> None:
    # curl verifies the name: a wrong certificate would fail with exit 60.
    for name in (A, "x.wild.example.test", B):
        for versions in (("--tlsv1.2", "--tls-max", "1.2"), ("--tlsv1.3",)):
            r = env.curl(name, "/name", *versions, "-w", " %{http_code} %{ssl_verify_result}")
            assert r.returncode == 0, r.stderr
            assert r.stdout == b"web 200 0", (name, versions)
    # /status names each listener's certificates
    tls = next(x for x in env.pyvs.status()["listeners"] if x["name"] == "tls")["tls"]
    assert [c["names"] for c in tls["certificates"]] == [[A, "*.wild.example.test"], [B]]
    assert [c["default"] for c in tls["certificates"]] == [False, True]
    assert tls["certificates"][0]["expires_in_days"] > 1


def test_tls_facts_reach_the_server_and_the_routes(env: Env) -> None:
    for version, want in (("1.2", b"TLSv1.2"), ("1.3", b"TLSv1.3")):
        ctx = env.context(maximum_version=ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3)
        _, data = get(ctx, env.port, "x.wild.example.test")
        h = body_json(data)
        assert h["X-Tls-Version"] == want.decode()
        assert h["X-Tls-Sni"] == "x.wild.example.test"
        assert h["X-Tls-Cipher"] and h["X-Forwarded-Proto"] == "https"
        assert b"\r\nStrict-Transport-Security: max-age=86400; includeSubDomains\r\n" in data
        # Routing conditions: tls_version, sni, tls_cipher, tls
        _, data = get(ctx, env.port, A, "/v13")
        assert data.endswith(b"other" if version == "1.3" else b"web")
    assert env.curl(B, "/sni").stdout == b"other"
    assert env.curl(A, "/sni").stdout == b"web"
    assert env.curl(A, "/cipher").stdout == b"other"
    assert env.curl(A, "/over").stdout == b"web"  # tls: false does not hold


def test_alpn_offers_http11_only(env: Env) -> None:
    r = env.curl(A, "/name", "-w", " %{http_version}")
    assert r.stdout == b"web 1.1"  # curl offered h2 and http/1.1
    ctx = env.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s, _ = get(ctx, env.port, A)
    assert s.alpn == "http/1.1"
    ctx = env.context()
    ctx.set_alpn_protocols(["h2"])
    s, data = get(ctx, env.port, A)
    assert s.alpn is None and b" 200 " in data


def test_host_not_covered_by_the_sni_certificate_is_421(env: Env) -> None:
    r = env.curl(A, "/name", "-H", f"Host: {B}", "-w", "%{http_code}", "-o", "/dev/null")
    assert r.stdout == b"421"
    # A name the same certificate covers is fine (a browser reuses the connection for it).
    r = env.curl(A, "/name", "-H", "Host: y.wild.example.test:443", "-w", " %{http_code}")
    assert r.stdout == b"web 200"


def _old_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.0
    return ctx


def test_bad_clients_are_refused_cleanly_and_the_listener_keeps_serving(env: Env) -> None:
    # TLS 1.0 only: the handshake fails with a protocol_version alert, no hang.
    for port in (env.port, env.strict):
        with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
            get(_old_client(), port, A)
    # TLS 1.2 on the modern (TLS 1.3 only) listener
    with pytest.raises(ssl.SSLError):
        get(env.context(maximum_version=ssl.TLSVersion.TLSv1_2), env.strict, A)
    # No default certificate: an unknown name and a client without SNI are refused
    # with an unrecognized_name alert, before any certificate is shown.
    with pytest.raises(ssl.SSLError, match="TLSV1_UNRECOGNIZED_NAME"):
        get(env.context(), env.strict, "unknown.example.test")
    no_sni = env.context(check_hostname=False)
    with pytest.raises(ssl.SSLError, match="TLSV1_UNRECOGNIZED_NAME"):
        get(no_sni, env.strict, None)
    r = env.curl("unknown.example.test", "/name", port=env.strict)
    assert r.returncode == 35 and b"unrecognized name" in r.stderr, r.stderr
    # Not TLS at all
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = s.recv(100)
        assert not answer.startswith(b"HTTP")  # at most a TLS alert, never an HTTP answer
        while answer:
            answer = s.recv(100)  # then closed
    # ... and everybody else is still served, on both listeners
    assert env.curl(A, "/name", port=env.strict).stdout == b"web"
    assert env.curl(B, "/name").stdout == b"web"
    # With a default certificate, an unknown name gets it (the name check is the client's)
    r = env.curl("unknown.example.test", "/name", "-k", "-H", f"Host: {B}")
    assert r.stdout == b"web"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_works_whichever_worker_accepts(env: Env, version: ssl.TLSVersion) -> None:
    ctx = env.context(maximum_version=version)
    first, data = get(ctx, env.port, A)
    session = first.session
    assert session is not None and not first.session_reused
    pids = {body_json(data)["X-Rid"].split("-")[0]}
    for _ in range(60):
        s, data = get(ctx, env.port, A, session=session)
        assert s.session_reused, "a worker did not accept the ticket"
        pids.add(body_json(data)["X-Rid"].split("-")[0])
        if len(pids) == 2:
            break
    assert len(pids) == 2, "the kernel never gave a connection to the other worker"


def test_client_certificates_mtls(env: Env) -> None:
    ca = env.pki.ca_pem
    base = ("--cacert", ca, "--resolve", f"{A}:{env.mtls}:127.0.0.1")
    url = f"https://{A}:{env.mtls}/headers"
    r = curl(*base, url)
    assert r.returncode != 0  # required: no certificate, no connection (or no response)
    r = curl(*base, "--cert", env.alice.cert, "--key", env.alice.key, "-H", "X-Client-DN: CN=mallory", url)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    dn = h["X-Client-DN"]
    assert dn.startswith("CN=alice,OU=Testing cert #") and ",O=trustme v" in dn, dn
    assert "mallory" not in r.stdout.decode()
    # A certificate from another CA is refused
    stranger = env.pki.issue("stranger.test")
    r = curl(*base, "--cert", stranger.cert, "--key", stranger.key, url)
    assert r.returncode != 0


def test_redirect_https_on_the_plain_listener(env: Env) -> None:
    r = curl("-i", "-H", "Host: www.example.test:8080", f"http://127.0.0.1:{env.plain}/a/b?x=1")
    head = r.stdout.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 308 ")
    assert f"\r\nLocation: https://www.example.test:{env.port}/a/b?x=1".encode() in head
    r = curl("-i", "-X", "POST", "--data", "x", f"http://127.0.0.1:{env.plain}/form", "-H", "Host: shop.test")
    assert r.stdout.startswith(b"HTTP/1.1 308 ")


def test_silent_client_is_dropped_after_the_handshake_timeout(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.strict), timeout=10) as s:
        start = time.monotonic()
        assert s.recv(100) == b""  # nothing sent: closed at the handshake timeout (300ms)
        assert time.monotonic() - start < 8


def test_large_bodies_both_ways_over_tls(env: Env, tmp_path: Path) -> None:
    size = 10 * 1024 * 1024
    r = env.curl(A, f"/big?size={size}", "--limit-rate", "20M")
    assert r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(pattern(size)).digest()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern(size))
    r = env.curl(A, "/upload", "--data-binary", f"@{upload}", "-H", "Content-Type: application/octet-stream")
    body = json.loads(r.stdout)
    assert body["length"] == size and body["sha256"] == hashlib.sha256(pattern(size)).hexdigest()


def test_openssl_s_client_sees_the_alerts(env: Env) -> None:
    def s_client(*args: str) -> str:
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{args[0]}", *args[1:]],
                           input=b"", capture_output=True, timeout=30)
        return (r.stdout + r.stderr).decode(errors="replace")

    out = s_client(str(env.port), "-tls1")
    assert "alert protocol version" in out, out
    out = s_client(str(env.strict), "-servername", "unknown.example.test")
    assert "unrecognized name" in out, out


class HalfClosingClient:
    """A TLS client over memory BIOs on a raw socket, so that it can send close_notify
    (and a TCP FIN) after its request and still read the answer."""

    def __init__(self, port: int, ctx: ssl.SSLContext, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=name)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                self.inc.write(data)
        self._flush()

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def close_notify(self) -> None:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the server's close_notify has not come yet
        self._flush()

    def read_until_closed(self) -> tuple[bytes, bool]:
        """Everything the server sends until it closes; and whether it sent close_notify."""
        got = b""
        notified = False
        while data := self.sock.recv(65536):
            self.inc.write(data)
            try:
                while chunk := self.obj.read(65536):
                    got += chunk
                notified = True  # b"": the server's close_notify
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                notified = True
        self.sock.close()
        return got, notified


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("how", ["close_notify+fin", "close_notify", "fin"])
def test_a_client_that_half_closes_after_its_request_gets_the_answer(env: Env, version: ssl.TLSVersion,
                                                                      how: str) -> None:
    c = HalfClosingClient(env.port, env.context(maximum_version=version), A)
    c.send(b"GET /name HTTP/1.1\r\nHost: %s\r\n\r\n" % A.encode())  # keep-alive asked for
    if "close_notify" in how:
        c.close_notify()
    if "fin" in how:
        c.sock.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    got, notified = c.read_until_closed()
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"\r\n\r\nweb"), got
    assert notified  # pyvs closed cleanly, with its own close_notify
    assert time.monotonic() - start < 8  # and at once, not at a shutdown timeout


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_bytes_after_the_close_notify_do_not_lose_the_answer(env: Env, version: ssl.TLSVersion) -> None:
    """A client sends a record after its close_notify (RFC 8446 6.1: to be ignored):
    the answer under way still comes."""
    c = HalfClosingClient(env.port, env.context(maximum_version=version), A)
    c.send(b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: %s\r\n\r\n" % A.encode())
    c.close_notify()
    # A separate read for pyvs (the bytes must not come with the close_notify): there is
    # no event to wait for on this side, so a pause, well under the server's 0.3 s.
    time.sleep(0.1)
    c.sock.sendall(b"\x17\x03\x03\x00\x02ab")  # an application data record, after the close_notify
    got, _ = c.read_until_closed()
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"slow web"), got


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_half_close_between_requests_closes_at_once(env: Env, version: ssl.TLSVersion) -> None:
    c = HalfClosingClient(env.port, env.context(maximum_version=version), A)
    c.send(b"GET /name HTTP/1.1\r\nHost: %s\r\n\r\n" % A.encode())
    c.close_notify()
    c.sock.shutdown(socket.SHUT_WR)
    got, _ = c.read_until_closed()
    assert got.endswith(b"web")
    c = HalfClosingClient(env.port, env.context(maximum_version=version), A)
    c.close_notify()  # no request at all
    start = time.monotonic()
    got, notified = c.read_until_closed()
    assert got == b"" and notified and time.monotonic() - start < 8


def _epoch() -> int:
    return int(time.time() // ROTATION)


def _in_one_epoch(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> tuple[Conn, bytes, int] | None:
    """One request; None when the connection straddled a key rotation (ambiguous)."""
    before = _epoch()
    conn, data = get(ctx, port, A, session=session)
    return (conn, data, before) if _epoch() == before else None


def _next_epoch() -> None:
    time.sleep(ROTATION - time.time() % ROTATION + 0.05)  # the keys change on the clock


def test_ticket_keys_rotate_previous_resumes_older_does_not(env: Env) -> None:
    """A ticket resumes in its key's period and the next (renewed then), on either
    worker; two rotations later it gets a full handshake. TLS 1.2 and 1.3 side by side."""
    versions = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    ctxs = [env.context(maximum_version=v) for v in versions]
    for _attempt in range(3):  # a step that straddles a rotation is tried again
        _next_epoch()
        got = [_in_one_epoch(ctx, env.rot, None) for ctx in ctxs]
        firsts = [f for f in got if f is not None]
        if len(firsts) != 2 or firsts[0][2] != firsts[1][2]:
            continue
        epoch = firsts[0][2]
        olds = [f[0].session for f in firsts]
        assert all(o is not None for o in olds) and not any(f[0].session_reused for f in firsts)
        _next_epoch()
        renewed: list[ssl.SSLSession | None] = [None, None]
        steps = [_in_one_epoch(ctxs[i % 2], env.rot, olds[i % 2]) for i in range(8)]  # both workers, likely
        if any(st is None or st[2] != epoch + 1 for st in steps):
            continue
        for i, st in enumerate(steps):
            assert st is not None
            assert st[0].session_reused, f"{versions[i % 2].name}: the previous key's ticket was refused"
            renewed[i % 2] = st[0].session
        _next_epoch()
        lates = [_in_one_epoch(ctx, env.rot, old) for ctx, old in zip(ctxs, olds, strict=True)]
        agains = [_in_one_epoch(ctx, env.rot, r) for ctx, r in zip(ctxs, renewed, strict=True)]
        if any(x is None or x[2] != epoch + 2 for x in lates + agains):
            continue
        for v, late, again in zip(versions, lates, agains, strict=True):
            assert late is not None and not late[0].session_reused, f"{v.name}: a ticket two rotations old resumed"
            assert again is not None and again[0].session_reused, f"{v.name}: the renewed ticket did not resume"
        return
    pytest.fail("every attempt straddled a key rotation (machine too slow for a 2 s period?)")

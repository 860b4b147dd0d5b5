"""Session-ticket keys rotated on a clock (pyvs.tls.tickets and its C helper), with real
OpenSSL handshakes over memory BIOs and an injected clock: no sockets, no waiting."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.config.tls_schema import TlsListener
from pyvs.tls import tickets
from pyvs.tls.certs import read
from pyvs.tls.server import CertSpec, TlsServer
from tests.unit.tls.pki import Pki

PERIOD = 3600
T0 = 1_800_000_000 // PERIOD * PERIOD + 10  # 10 s into an epoch


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clock() -> Iterator[None]:
    tickets.set_clock(T0)
    yield
    tickets.set_clock(0)


def server(pki: Pki, *names: str, rotation: float = PERIOD, client_ca: str | None = None,
           verify: str = "optional") -> TlsServer:
    c = pki.issue(*(names or ("a.example.test",)))
    loaded, key = read(c.cert, c.key)
    return TlsServer([CertSpec(loaded, key, True)], ticket_rotation=rotation, client_ca=client_ca,
                     client_verify=verify)


def client(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = version
    return ctx


def connect(srv: TlsServer, cl: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
    """A handshake, the tickets queued as a worker does (TlsConnection), one byte read."""
    return tickets._handshake(srv.front, cl, session, name="a.example.test", queued=srv.queued_tickets)


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def test_the_helper_is_built_and_passes_its_self_test() -> None:
    # CI builds it (Makefile APT_BUILD: libssl-dev); without it pyvs falls back, logged.
    assert tickets.available(), tickets._verdict


@pytest.mark.parametrize("version", VERSIONS)
def test_a_ticket_resumes_on_another_workers_context(pki: Pki, clock: None, version: ssl.TLSVersion) -> None:
    # Two TlsServer objects with one secret stand for two workers (which inherit the
    # supervisor's object, secret included): same secret and label, hence the same keys.
    # A load of its own (a reload) draws another secret: its keys differ.
    cert = pki.issue("a.example.test")
    loaded, key = read(cert.cert, cert.key)
    secret = bytes(range(32))
    one = TlsServer([CertSpec(loaded, key, True)], ticket_rotation=PERIOD, ticket_key=secret)
    two = TlsServer([CertSpec(loaded, key, True)], ticket_rotation=PERIOD, ticket_key=secret)
    reloaded = TlsServer([CertSpec(loaded, key, True)], ticket_rotation=PERIOD)
    assert one.rotation == two.rotation == PERIOD
    cl = client(version)
    first = connect(one, cl)
    assert not first.session_reused and first.session is not None
    assert connect(two, cl, first.session).session_reused
    assert not connect(reloaded, cl, first.session).session_reused


@pytest.mark.parametrize("version", VERSIONS)
def test_rotation_previous_key_resumes_and_renews_older_is_refused(pki: Pki, clock: None,
                                                                   version: ssl.TLSVersion) -> None:
    srv = server(pki)
    cl = client(version)
    old = connect(srv, cl).session
    before = tickets.statistics()
    tickets.set_clock(T0 + PERIOD)  # one rotation later: the previous key still decrypts
    again = connect(srv, cl, old)
    assert again.session_reused
    after = tickets.statistics()
    assert after["renewed"] == before["renewed"] + 1
    renewed = again.session  # the fresh ticket, under the current key
    tickets.set_clock(T0 + 2 * PERIOD)  # two rotations: the first ticket is too old
    late = connect(srv, cl, old)
    assert not late.session_reused
    assert tickets.statistics()["unknown"] == after["unknown"] + 1
    assert connect(srv, cl, renewed).session_reused  # the renewed one is only one period old


def test_listeners_with_other_security_settings_do_not_share_keys(pki: Pki, clock: None) -> None:
    plain = server(pki)
    mtls = server(pki, client_ca=pki.ca_pem)
    assert mtls.rotation == PERIOD
    assert server(pki, client_ca=pki.ca_pem, verify="required").rotation == PERIOD  # (layout check: modes)
    cl = client(ssl.TLSVersion.TLSv1_3)
    session = connect(plain, cl).session
    assert not connect(mtls, cl, session).session_reused
    assert connect(plain, cl, session).session_reused


def test_rotation_zero_keeps_openssl_keys(pki: Pki) -> None:
    srv = server(pki, rotation=0)
    assert srv.rotation == 0.0 and srv.statistics()["session_ticket_rotation"] is None
    cl = client(ssl.TLSVersion.TLSv1_3)
    assert connect(srv, cl, connect(srv, cl).session).session_reused  # OpenSSL's keys still resume


def test_config_key(pki: Pki, tmp_path: Path) -> None:
    c = pki.issue("a.example.test")
    base = {"certificates": [{"cert": c.cert, "key": c.key}]}
    assert TlsListener.model_validate(base).ticket_rotation == 3600.0
    assert TlsListener.model_validate({**base, "ticket_rotation": "2s"}).server.rotation == 2.0
    with pytest.raises(ValueError, match="ticket_rotation"):
        TlsListener.model_validate({**base, "ticket_rotation": "500ms"})


def test_tls13_tickets_leave_with_the_first_response_not_after_the_handshake(pki: Pki) -> None:
    srv = server(pki)
    assert srv.queued_tickets == tickets.TICKETS and srv.front.num_tickets == 0
    cl = client(ssl.TLSVersion.TLSv1_3)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cl.wrap_bio(c_in, c_out, server_hostname="a.example.test")
    s = srv.front.wrap_bio(s_in, s_out, server_side=True)
    for obj, src, dst in ((c, None, s_in), (s, c_out, c_in), (c, s_out, s_in), (s, c_out, c_in)):
        if src is not None:
            (s_in if obj is s else c_in).write(src.read())
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        dst.write((c_out if obj is c else s_out).read())
    assert s.version() == "TLSv1.3"
    assert c_in.pending == 0  # the server's last handshake step sent nothing: no ticket after it
    assert tickets.queue(s, srv.queued_tickets)
    assert s_out.pending == 0  # queued, not written yet
    s.write(b"response")
    c_in.write(s_out.read())  # tickets and response in one write
    assert c.read(100) == b"response"
    assert c.session is not None and c.session.has_ticket
    assert connect(srv, cl, c.session).session_reused


def test_without_the_helper_openssl_keys_are_used_and_it_says_so(pki: Pki, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(tickets, "_tickets", None)
    monkeypatch.setattr(tickets, "_verdict", None)
    srv = server(pki)
    assert srv.rotation == 0.0 and srv.queued_tickets == 0 and srv.front.num_tickets == 2
    assert "timed key rotation is off" in caplog.text and "not built" in caplog.text
    cl = client(ssl.TLSVersion.TLSv1_3)
    assert connect(srv, cl, connect(srv, cl).session).session_reused  # OpenSSL's keys, its own tickets


def test_a_layout_check_failure_falls_back(pki: Pki, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @staticmethod
        def check(*args: object) -> None:
            raise RuntimeError("SSLContext layout check failed")

        @staticmethod
        def install(*args: object) -> None:
            raise AssertionError("no context may get the keys once one fails its check")

    monkeypatch.setattr(tickets, "_tickets", Broken)
    monkeypatch.setattr(tickets, "_verdict", "")  # (the self-test passed)
    srv = server(pki)
    assert srv.rotation == 0.0 and srv.queued_tickets == 0 and srv.front.num_tickets == 2
    assert "not installed (SSLContext layout check failed)" in caplog.text


def test_nodes_sharing_a_ticket_key_file_resume_each_others_tickets(pki: Pki, clock: None, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    keyfile = tmp_path / "ticket.key"
    keyfile.write_bytes(bytes(range(80)))
    cert = pki.issue("a.example.test")
    base = {"certificates": [{"cert": cert.cert, "key": cert.key}]}

    def node(**extra: object) -> TlsServer:
        return TlsListener.model_validate({**base, **extra}).server

    one, two = node(ticket_key_file=str(keyfile)), node(ticket_key_file=str(keyfile))
    cl = client(ssl.TLSVersion.TLSv1_3)
    session = connect(one, cl).session
    assert connect(two, cl, session).session_reused
    assert not connect(node(), cl, session).session_reused  # no file: its own secret
    keyfile.write_bytes(b"short")
    with pytest.raises(ValueError, match=r"ticket_key_file: .*at least 48 bytes"):
        node(ticket_key_file=str(keyfile))
    for phrase in (b"correct horse battery staple, a passphrase and not a key",
                   b"correct horse battery staple, a passphrase and not a key\n"):  # (as echo writes it)
        keyfile.write_bytes(phrase)
        with pytest.raises(ValueError, match=r"ticket_key_file: .*random data"):
            node(ticket_key_file=str(keyfile))
    with pytest.raises(ValueError, match="ticket_key_file: needs"):
        node(ticket_key_file=str(keyfile), ticket_rotation=0)

"""pyvs.tls.transport's SSLObject corrections over memory BIOs (no sockets): the alert
of a refused handshake is left for uvloop to send, a close_notify goes to the
connection's hook, and our shutdown does not wait for a peer that is gone."""

from __future__ import annotations

import ssl
import warnings

import pytest

from pyvs.tls import transport
from pyvs.tls.certs import read
from pyvs.tls.server import CertSpec, TlsServer
from tests.unit.tls.pki import Pki


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    """Two certificates, no default: unknown names are refused."""
    pki = Pki(tmp_path_factory.mktemp("pki"))
    specs = []
    for name in ("a.example.test", "b.example.test"):
        c = pki.issue(name)
        loaded, key = read(c.cert, c.key)
        specs.append(CertSpec(loaded, key))
    srv = TlsServer(specs)
    transport.prepare(srv.front)
    return srv


class Pair:
    """A client and a ServerSSLObject joined by memory BIOs."""

    def __init__(self, srv: TlsServer, client: ssl.SSLContext, name: str | None) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.c = client.wrap_bio(self.c_in, self.c_out, server_hostname=name)
        self.s = srv.front.wrap_bio(self.s_in, self.s_out, server_side=True)
        assert isinstance(self.s, transport.ServerSSLObject)

    def client_step(self) -> None:
        try:
            self.c.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.s_in.write(self.c_out.read())

    def handshake(self) -> None:
        for _ in range(4):
            self.client_step()
            try:
                self.s.do_handshake()
            except ssl.SSLWantReadError:
                pass
            self.c_in.write(self.s_out.read())
        self.client_step()


def client(**kw: object) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_unknown_name_alert_is_left_in_the_bio_then_the_failure_is_raised(strict: TlsServer) -> None:
    p = Pair(strict, client(), "unknown.example.test")
    p.client_step()
    with pytest.raises(ssl.SSLWantReadError):  # uvloop flushes the BIO: the alert leaves
        p.s.do_handshake()
    alert = p.s_out.read()
    assert alert[:1] == b"\x15"  # a TLS alert record
    with pytest.raises(ssl.SSLError):  # the next call (the client closed, or timeout) fails
        p.s.do_handshake()
    p.c_in.write(alert)
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        p.c.do_handshake()


def test_protocol_version_alert(strict: TlsServer) -> None:
    old = client()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    p = Pair(strict, old, "a.example.test")
    p.client_step()
    with pytest.raises(ssl.SSLWantReadError):
        p.s.do_handshake()
    p.c_in.write(p.s_out.read())
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        p.c.do_handshake()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_close_notify_goes_to_the_hook_and_data_still_flows(strict: TlsServer, version: ssl.TLSVersion) -> None:
    p = Pair(strict, client(maximum_version=version), "a.example.test")
    p.handshake()
    calls = []
    p.s.pyvs_close_notify = lambda: calls.append(1) or True
    p.c.write(b"GET / HTTP/1.1\r\n\r\n")
    try:
        p.c.unwrap()
    except ssl.SSLWantReadError:
        pass
    p.s_in.write(p.c_out.read())
    assert p.s.read(1000) == b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(ssl.SSLWantReadError):  # not b"": uvloop must not start its shutdown
        p.s.read(1000)
    assert calls == [1] and p.s.pyvs_close_notify is None
    p.s.write(b"answer")  # the response still goes out...
    p.s.unwrap()  # ...and our close_notify completes the shutdown (the peer's came)
    p.c_in.write(p.s_out.read())
    assert p.c.read(100) == b"answer"


def test_a_hook_that_declines_leaves_uvloops_behaviour(strict: TlsServer) -> None:
    p = Pair(strict, client(), "a.example.test")
    p.handshake()
    p.s.pyvs_close_notify = lambda: False  # (a connection already closing)
    try:
        p.c.unwrap()
    except ssl.SSLWantReadError:
        pass
    p.s_in.write(p.c_out.read())
    assert p.s.read(1000) == b""


def test_shutdown_does_not_wait_for_a_peer_that_sent_fin(strict: TlsServer) -> None:
    p = Pair(strict, client(), "a.example.test")
    p.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        p.s.unwrap()  # normally: wait for the peer's close_notify
    q = Pair(strict, client(), "a.example.test")
    q.handshake()
    q.s.pyvs_peer_eof = True
    q.s.unwrap()  # the peer is gone: done once ours is written
    assert q.s_out.pending


def test_write_and_pending_are_the_c_methods(strict: TlsServer) -> None:
    p = Pair(strict, client(), "a.example.test")
    assert p.s.write == p.s._sslobj.write and p.s.pending == p.s._sslobj.pending  # type: ignore[attr-defined]


def test_an_untested_uvloop_falls_back_to_its_own_tls(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Another uvloop than the one transport.py was written against: uvloop's own TLS
    (create_server ssl=), said once."""
    from pyvs.tls import transport

    assert transport.usable()  # the installed one is (pyproject pins the tested range)
    monkeypatch.setattr(transport, "WHY_NOT", "uvloop 9.9.0 is not a tested version")
    monkeypatch.setattr(transport, "_warned", False)
    assert not transport.usable() and not transport.usable()
    assert caplog.text.count("uvloop's own TLS is used") == 1


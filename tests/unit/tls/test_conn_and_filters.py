"""A TLS connection's facts, the SNI/Host rule, TLS route conditions, variables and the
TLS filters, with a stand-in SSLObject (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from pyvs.l7 import conditions as c
from pyvs.l7.context import VARIABLES
from pyvs.l7.filters.base import Verdict
from pyvs.tls.certs import read
from pyvs.tls.conn import TlsFacts, TlsRequestView, rfc4514
from pyvs.tls.filters import ClientSubject, Hsts, HttpsRedirect
from pyvs.tls.server import CertSpec, TlsServer
from tests.unit.filters.fake import FakeExchange, response
from tests.unit.tls.pki import Pki


class FakeSsl:
    """What TlsFacts reads of an SSLObject."""

    def __init__(self, sni: str | None, cert: int | None, subject: Any = None) -> None:
        if sni is not None:
            self.pyvs_sni = sni
        if cert is not None:
            self.pyvs_cert = cert
        self.subject = subject

    def version(self) -> str:
        return "TLSv1.3"

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def getpeercert(self) -> dict[str, Any]:
        return {"subject": self.subject} if self.subject else {}


class Endpoint:
    def __init__(self, server: TlsServer, check_host: bool = True, subject_header: str | None = None) -> None:
        self.server = server
        self.check_host = check_host
        self.subject_header = subject_header


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    specs = []
    for names, default in ((("a.test", "*.w.test"), False), (("b.test",), True)):
        cert = pki.issue(*names)
        loaded, key = read(cert.cert, cert.key)
        specs.append(CertSpec(loaded, key, default))
    return TlsServer(specs)


def facts(server: TlsServer, sni: str | None, cert: int | None, **kw: Any) -> TlsFacts:
    return TlsFacts(Endpoint(server, **kw), FakeSsl(sni, cert))  # type: ignore[arg-type]


def test_sni_host_rule(server: TlsServer) -> None:
    f = facts(server, "a.test", 0)
    assert f.sni == b"a.test"
    assert not f.misdirected(b"a.test") and not f.misdirected(b"A.Test:8443")
    assert not f.misdirected(b"x.w.test")  # the same certificate covers it
    assert f.misdirected(b"b.test") and f.misdirected(b"x.y.w.test")
    assert not f.misdirected(None) and not f.misdirected(b"")  # HTTP/1.0 without Host
    assert not facts(server, None, None).misdirected(b"b.test")  # no SNI, nothing to compare
    assert not facts(server, "a.test", 0, check_host=False).misdirected(b"b.test")


def test_facts_and_variables(server: TlsServer) -> None:
    f = facts(server, "A.Test.", 0)
    assert f.sni == b"a.test" and f.version == b"TLSv1.3" and f.cipher == b"TLS_AES_128_GCM_SHA256"
    assert f.client_subject == b""
    ex = FakeExchange()
    assert VARIABLES["tls_version"](ex) == b""  # type: ignore[arg-type]  # plain: empty
    ex.view = TlsRequestView(f)
    ex.view.reset(ex.head)  # type: ignore[arg-type]
    assert VARIABLES["tls_version"](ex) == b"TLSv1.3"  # type: ignore[arg-type]
    assert VARIABLES["tls_sni"](ex) == b"a.test"  # type: ignore[arg-type]


def test_rfc4514_subject() -> None:
    subject = ((("countryName", "FR"),), (("organizationName", "Acme, Inc."),), (("commonName", "#alice\r\n"),))
    assert rfc4514(subject) == "CN=\\#alice\\0D\\0A,O=Acme\\, Inc.,C=FR"
    assert rfc4514(((("commonName", "é"),),)) == "CN=\\C3\\A9"
    assert rfc4514(None) == ""


def test_conditions_on_tls_facts(server: TlsServer) -> None:
    ex = FakeExchange()
    plain = ex.view
    tls_view = TlsRequestView(facts(server, "a.test", 0))
    tls_view.reset(ex.head)  # type: ignore[arg-type]
    cases = [
        (c.OverTls(True), True, False),
        (c.OverTls(False), False, True),
        (c.TlsFact("tls_version", ["TLSv1.3"]), True, False),
        (c.TlsFact("tls_version", ["TLSv1.2"]), False, False),
        (c.TlsFact("sni", "a.test"), True, False),
        (c.TlsFact("sni", "~^b"), False, False),
        (c.TlsFact("sni", False), False, True),
        (c.TlsFact("tls_cipher", "~GCM"), True, False),
    ]
    for cond, on_tls, on_plain in cases:
        assert cond.test(tls_view) is on_tls, cond.text
        assert cond.test(plain) is on_plain, cond.text
    assert "sni is 'a.test'" in c.TlsFact("sni", "x").explain(tls_view)


def test_hsts_replaces_the_servers_own() -> None:
    ex = FakeExchange()
    rh = response(b"HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=1\r\nContent-Length: 0\r\n\r\n")
    assert Hsts(86400, True, True).on_response(ex, rh) == Verdict.CONTINUE  # type: ignore[arg-type]
    assert b"max-age=1" not in rh.block and not rh.raw_ok
    assert rh.block.endswith(b"\r\nStrict-Transport-Security: max-age=86400; includeSubDomains; preload\r\n")


def test_client_subject_header_cannot_be_spoofed(server: TlsServer) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a.test\r\nx-client-dn: CN=mallory\r\nX-Client-DN: CN=eve\r\n\r\n"
    f = TlsFacts(Endpoint(server), FakeSsl("a.test", 0, ((("commonName", "alice"),),)))  # type: ignore[arg-type]
    ex = FakeExchange(raw)
    ex.view = TlsRequestView(f)
    ex.view.reset(ex.head)  # type: ignore[arg-type]
    ClientSubject("X-Client-DN").on_request(ex)  # type: ignore[arg-type]
    out = ex.forwarded()
    assert b"mallory" not in out and b"eve" not in out
    assert out.endswith(b"X-Client-DN: CN=alice\r\n\r\n")
    # Without a client certificate (client_verify: optional): removed, nothing added
    ex = FakeExchange(raw)
    ClientSubject("X-Client-DN").on_request(ex)  # type: ignore[arg-type]
    assert b"client-dn" not in ex.forwarded().lower()


def test_https_redirect() -> None:
    ex = FakeExchange(b"POST /a?b=1 HTTP/1.1\r\nHost: WWW.Example.test:8080\r\n\r\n")
    assert HttpsRedirect(443).on_request(ex) == Verdict.RESPOND  # type: ignore[arg-type]
    assert ex.reply is not None and ex.reply.status == 308
    assert b"Location: https://www.example.test/a?b=1\r\n" in ex.reply.fields
    ex = FakeExchange(b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
    HttpsRedirect(8443).on_request(ex)  # type: ignore[arg-type]
    assert ex.reply is not None and b"Location: https://h.test:8443/\r\n" in ex.reply.fields
    ex = FakeExchange(b"GET / HTTP/1.0\r\n\r\n")
    HttpsRedirect(443).on_request(ex)  # type: ignore[arg-type]
    assert ex.reply is not None and ex.reply.status == 400

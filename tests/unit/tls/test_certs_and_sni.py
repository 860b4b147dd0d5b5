"""Certificates, names and the choice by SNI (pyvs.tls.certs, pyvs.tls.server), with
real files from trustme and no sockets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pyvs.tls import profiles
from pyvs.tls.certs import name_matches, read
from pyvs.tls.server import REFUSE, CertSpec, TlsServer
from tests.unit.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def spec(pki: Pki, *names: str, default: bool = False, cn: str | None = None) -> CertSpec:
    c = pki.issue(*names, common_name=cn)
    loaded, key = read(c.cert, c.key)
    return CertSpec(loaded, key, default)


@pytest.mark.parametrize(("name", "host", "ok"), [
    ("a.example.com", "a.example.com", True),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", False),  # one label only
    ("*.example.com", "example.com", False),
    ("*.example.com", ".example.com", False),  # the label may not be empty
    ("a.example.com", "b.example.com", False),
])
def test_name_matches_one_label_wildcards(name: str, host: str, ok: bool) -> None:
    assert name_matches(name, host) is ok


def test_read_learns_names_and_refuses_bad_files(pki: Pki, tmp_path: Path) -> None:
    c = pki.issue("www.example.test", "*.shop.example.test")
    loaded, key = read(c.cert, c.key)
    assert loaded.names == ("www.example.test", "*.shop.example.test")
    assert loaded.covers("x.shop.example.test") and not loaded.covers("shop.example.test")
    assert b"PRIVATE KEY" in key and {p for p, _ in loaded.mtimes} == {c.cert, c.key}
    with pytest.raises(ValueError, match=r"cannot read the certificate .*No such file"):
        read(str(tmp_path / "missing.pem"), c.key)
    bad = tmp_path / "bad.pem"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        read(str(bad), c.key)
    with pytest.raises(ValueError, match="no PEM private key"):
        read(c.cert, str(bad))
    other = pki.issue("other.test")
    with pytest.raises(ValueError, match="does not fit"):
        read(c.cert, other.key)
    # Key and certificate in one file
    both = tmp_path / "both.pem"
    both.write_bytes(Path(c.cert).read_bytes() + Path(c.key).read_bytes())
    assert read(str(both))[0].names == loaded.names


def test_common_name_only_when_there_is_no_san(pki: Pki) -> None:
    s = spec(pki, "san.example.test", cn="cn.example.test")
    assert s.loaded.names == ("san.example.test",)


def test_select_exact_then_wildcard_then_default(pki: Pki) -> None:
    srv = TlsServer([spec(pki, "a.test", "*.w.test"), spec(pki, "b.test", default=True)])
    assert srv.select("a.test") == 0
    assert srv.select("A.TEST.") == 0  # case and a final dot do not matter
    assert srv.select("x.w.test") == 0
    assert srv.select("b.test") == 1
    assert srv.select("unknown.test") == 1 and srv.select(None) == 1
    assert srv.front is srv.contexts[1]


def test_without_a_default_unknown_names_are_refused(pki: Pki) -> None:
    srv = TlsServer([spec(pki, "a.test"), spec(pki, "b.test")])
    assert srv.default is None
    assert srv.select("c.test") is None and srv.select(None) is None

    class Obj:
        context: ssl.SSLContext | None = None

    obj = Obj()
    assert srv.on_sni(obj, "c.test", srv.front) == REFUSE  # type: ignore[arg-type]
    assert srv.on_sni(obj, "b.test", srv.front) is None  # type: ignore[arg-type]
    assert obj.context is srv.contexts[1] and obj.pyvs_cert == 1 and obj.pyvs_sni == "b.test"  # type: ignore[attr-defined]


def test_one_certificate_is_the_default(pki: Pki) -> None:
    assert TlsServer([spec(pki, "only.test")]).default == 0


def test_profiles() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    profiles.apply(ctx, "intermediate")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all("GCM" in n or "CHACHA20" in n for n in tls12)
    assert all(n.startswith(("ECDHE-", "DHE-")) for n in tls12)  # forward secrecy only
    assert ctx.options & ssl.OP_NO_COMPRESSION
    profiles.apply(ctx, "modern")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3

"""The tls configuration keys: what is accepted, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.schema import Config
from tests.unit.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def config(listener: dict[str, Any], server: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "bind": ["127.0.0.1:8443"], "backend": "b", **listener}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:9000", **(server or {})}]}],
    }


def errors(cfg: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(yaml.safe_dump(cfg), "test.yaml")
    return info.value.problems


def load(cfg: dict[str, Any]) -> Config:
    return load_text(yaml.safe_dump(cfg), "test.yaml")


def test_a_config_without_tls_is_unchanged() -> None:
    cfg = load(config({}))
    assert cfg.listeners[0].tls is None and cfg.listeners[0].redirect_https is False
    assert cfg.backends[0].servers[0].tls is None


def test_defaults(pki: Pki) -> None:
    c = pki.issue("a.test")
    tls = load(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}]}})).listeners[0].tls
    assert tls is not None
    assert tls.profile == "intermediate" and tls.alpn == ["http/1.1"] and tls.session_tickets
    assert tls.check_host and tls.client_ca is None and tls.hsts is None
    assert tls.server.default == 0 and tls.server.names() == ["a.test"]


def test_errors_name_the_key(pki: Pki, tmp_path: Path) -> None:
    c = pki.issue("a.test")
    missing = str(tmp_path / "nope.key")
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": missing}]}}))
    assert any(p.startswith("listeners[0].tls.certificates[0]") and "nope.key" in p for p in probs), probs
    load(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}], "alpn": ["h2", "http/1.1"]}}))  # h2: pyvs/h2
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}], "alpn": ["h3"]}}))
    assert any("listeners[0].tls.alpn" in p and "unknown protocol" in p for p in probs), probs
    two = [{"cert": c.cert, "key": c.key, "default": True}] * 2
    probs = errors(config({"tls": {"certificates": two}}))
    assert any("only one certificate can be the default" in p for p in probs), probs
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}], "client_ca": missing}}))
    assert any("client_ca" in p and "nope.key" in p for p in probs), probs
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}], "bogus": 1}}))
    assert any("bogus" in p for p in probs), probs
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}],
                                   "client_subject_header": "Content-Length"}}))
    assert any("client_subject_header" in p for p in probs), probs
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}]}, "redirect_https": True}))
    assert any("redirect_https is for a plain listener" in p for p in probs), probs
    probs = errors(config({"tls": {"certificates": [{"cert": c.cert, "key": c.key}]}, "accept_proxy": True}))
    assert any("accept_proxy is not available on tls listeners" in p for p in probs), probs
    probs = errors(config({"redirect_https": 70000}))
    assert any("redirect_https" in p for p in probs), probs


def test_server_tls(pki: Pki, tmp_path: Path) -> None:
    cfg = load(config({}, {"tls": {"ca": pki.ca_pem, "sni": "s.internal"}}))
    tls = cfg.backends[0].servers[0].tls
    assert tls is not None and tls.verify and tls.context.check_hostname
    probs = errors(config({}, {"tls": {"ca": str(tmp_path / "none.pem")}}))
    assert any(p.startswith("backends[0].servers[0].tls") and "none.pem" in p for p in probs), probs
    probs = errors(config({}, {"tls": {"key": "/x.key"}}))
    assert any("needs cert" in p for p in probs), probs
    assert not load(config({}, {"tls": {"verify": False}})).backends[0].servers[0].tls.context.check_hostname  # type: ignore[union-attr]


def test_route_conditions(pki: Pki) -> None:
    route = {"match": {"tls_version": ["1.3", "TLSv1.2"], "sni": "~^a", "tls_cipher": "X", "tls": True},
             "backend": "b"}
    cfg = load(config({"routes": [route]}))
    m = cfg.listeners[0].routes[0].match
    assert m is not None and m.tls_version == ["TLSv1.3", "TLSv1.2"] and not m.is_empty()
    probs = errors(config({"routes": [{"match": {"tls_version": ["1.1"]}, "backend": "b"}]}))
    assert any("tls_version" in p and "TLSv1.2 or TLSv1.3" in p for p in probs), probs
    probs = errors(config({"routes": [{"match": {"sni": "~("}, "backend": "b"}]}))
    assert any("sni" in p for p in probs), probs

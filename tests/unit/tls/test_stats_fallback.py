"""With uvloop's own TLS (the fallback of pyvs/tls/transport.py) pyvs learns of no
failed handshake: /status must say "unknown", not 0, and /metrics must not export a
failure count it does not have."""

from __future__ import annotations

import pytest
import yaml

from pyvs.admin.metrics import render
from pyvs.config.loader import load_text
from pyvs.tls import stats, transport
from tests.unit.tls.pki import Pki


def _status(pki: Pki) -> dict[str, object]:
    c = pki.issue("a.test")
    cfg = load_text(yaml.safe_dump({
        "listeners": [{"name": "web", "bind": ["127.0.0.1:8443"], "backend": "b",
                       "tls": {"certificates": [{"cert": c.cert, "key": c.key}]}}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:9000"}]}],
    }), "test.yaml")
    row = [0] * len(stats.FIELDS)
    row[stats.FIELDS.index("handshakes")] = 3
    row[stats.FIELDS.index("failed_version")] = 2
    return stats.aggregate([{"tls": {"listeners": {"web": row}, "tickets": {}}}], cfg.listeners)


def test_failures_are_unknown_with_uvloops_own_tls(tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    counted = _status(pki)["tls"]
    assert counted["failures_counted"] is True and counted["total"]["failed"] == 2  # type: ignore[index]
    monkeypatch.setattr(transport, "WHY_NOT", "uvloop 9.9.0 is not a tested version")
    tls = _status(pki)["tls"]
    assert tls["failures_counted"] is False  # type: ignore[index]
    for view in (tls["total"], tls["listeners"]["web"]):  # type: ignore[index]
        assert view["handshakes"] == 3 and view["failed"] is None and view["failures"] is None
    assert 'result="completed"} 3' in render({"tls": tls}) and 'result="failed"' not in render({"tls": tls})
    assert 'result="failed"} 2' in render({"tls": counted})

"""access_log and pageviews keys: short forms, off, and errors that name the key."""

from __future__ import annotations

import pytest

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.log_schema import AccessLogConfig, syslog_target

BASE = """
listeners:
  - name: web
    bind: ["127.0.0.1:8080"]
    backend: b
{extra}
backends:
  - name: b
    servers: [{{name: s, address: "127.0.0.1:9000"}}]
"""


def _load(extra: str, top: str = "") -> object:
    return load_text(top + BASE.format(extra=extra))


def test_short_forms() -> None:
    cfg = _load("    access_log: /var/log/pyvs/access.json")
    lst = cfg.listeners[0]  # type: ignore[attr-defined]
    assert isinstance(lst.access_log, AccessLogConfig) and lst.access_log.format == "ecs"
    cfg = _load("    access_log: off", "global: {access_log: stdout}\n")
    assert cfg.listeners[0].access_log is False  # type: ignore[attr-defined]
    assert cfg.global_.access_log.path == "stdout"  # type: ignore[attr-defined]
    cfg = _load("    access_log: {path: 'syslog://127.0.0.1:5514', format: combined, facility: local3}")
    assert cfg.listeners[0].access_log.facility == "local3"  # type: ignore[attr-defined]


def test_syslog_targets() -> None:
    assert syslog_target("syslog:///dev/log") == ("unix", "/dev/log")
    assert syslog_target("syslog://127.0.0.1") == ("udp", ("127.0.0.1", 514))
    assert syslog_target("syslog://[::1]:5514") == ("udp", ("::1", 5514))


@pytest.mark.parametrize(("extra", "where"), [
    ("    access_log: {path: 'syslog:127.0.0.1'}", "listeners[0].access_log"),
    ("    access_log: {path: x.json, format: clf}", "listeners[0].access_log"),
    ("    access_log: {path: x.json, flush: 0s}", "listeners[0].access_log"),
    ("    access_log: {path: x.json, tag: 'a b'}", "listeners[0].access_log"),
])
def test_errors_name_the_key(extra: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(extra)
    assert where in str(err.value)


def test_pageviews_defaults() -> None:
    cfg = _load("", "pageviews: {methods: [get], exclude_extensions: [css, .JS]}\n")
    pv = cfg.pageviews  # type: ignore[attr-defined]
    assert pv.methods == ["GET"] and pv.exclude_extensions == [".css", ".js"]
    assert pv.content_types == ["text/html"] and pv.prefix_depth == 1
    assert _load("").pageviews is None  # type: ignore[attr-defined]

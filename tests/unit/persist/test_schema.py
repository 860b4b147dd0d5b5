"""Configuration of persistence and shared state: what is accepted, and each
error's ``path: reason`` as ``pyvs check`` prints it."""

from __future__ import annotations

import pytest

from pyvs.config.loader import ConfigError, load_text
from tests.unit.persist.rig import config


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return exc.problems
    return []


def test_contract_forms_are_accepted() -> None:
    cfg = load_text(config("{type: cookie, name: SERVERID, mode: insert}")
                    + 'state: {redis: "redis://127.0.0.1:6379/0"}\n')
    p = cfg.backends[0].persistence
    assert p is not None and p.type == "cookie" and p.indirect and not p.uses_table
    assert cfg.state.redis == "redis://127.0.0.1:6379/0" and cfg.state.key_prefix == "pyvs"
    p = load_text(config("{type: source, timeout: 30m}")).backends[0].persistence
    assert p is not None and p.timeout == 1800.0 and p.uses_table
    assert load_text(config("{type: header, name: X-Token}")).state.redis is None


P = "backends[0].persistence"


@pytest.mark.parametrize(("persistence", "error"), [
    ("{type: cookie}", f"{P}: type cookie needs `name` (the cookie that identifies a session)"),
    ("{type: source, mode: insert}", f"{P}: mode: not used by type source"),
    ("{type: cookie, name: S, timeout: 1m, ipv4_prefix: 8}", f"{P}: ipv4_prefix, timeout: not used by type cookie"),
    ("{type: cookie, name: S, mode: prefix, maxidle: 1h}", f"{P}: maxidle: only used by mode insert"),
    ("{type: cookie, name: S, samesite: none}",
     f"{P}: samesite none needs secure: true (browsers drop such cookies otherwise)"),
    ("{type: cookie, name: 'a b'}", f"{P}.name: expected a cookie or header name (letters, digits, -_.), got 'a b'"),
    ("{type: param, name: 'a=b'}", f"{P}.name: expected a cookie or header name (letters, digits, -_.), got 'a=b'"),
    ("{type: source, ipv4_prefix: 33}", f"{P}.ipv4_prefix: Input should be less than or equal to 32"),
    ("{type: source, on_failure: retry}", f"{P}.on_failure: Input should be 'redispatch' or 'fail'"),
    ("{type: sticky}", f"{P}.type: Input should be 'source', 'cookie', 'header' or 'param'"),
])
def test_persistence_errors(persistence: str, error: str) -> None:
    assert problems(config(persistence)) == [error]


@pytest.mark.parametrize(("state", "error"), [
    ("{redis: 'http://x'}", "state.redis: expected a URL like redis://127.0.0.1:6379/0, got 'http://x'"),
    ("{redis: 'redis://'}", "state.redis: the Redis URL names no host: 'redis://'"),
    ("{key_prefix: 'a b'}", "state.key_prefix: expected letters, digits and _.:- only, got 'a b'"),
    ("{timeout: 0}", "state.timeout: Input should be greater than 0"),
    ("{rediss: x}", "state.rediss: unknown key"),
])
def test_state_errors(state: str, error: str) -> None:
    assert problems(config("{type: source}") + f"state: {state}\n") == [error]

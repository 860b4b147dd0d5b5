"""The http2 keys of a listener: validated with the key and the reason (pyvs/h2/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pyvs.config.loader import ConfigError, load_text
from pyvs.h2.settings import serves_h2


def config(**listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "bind": ["127.0.0.1:8080"], "backend": "b", **listener}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:9000"}]}],
    }


def problems(cfg: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(yaml.safe_dump(cfg), "test.yaml")
    return info.value.problems


def test_off_by_default_and_on_with_the_key() -> None:
    cfg = load_text(yaml.safe_dump(config()), "t.yaml")
    assert not cfg.listeners[0].http2 and not serves_h2(cfg.listeners[0])
    cfg = load_text(yaml.safe_dump(config(http2=True, http2_limits={"max_concurrent_streams": 10,
                                                                   "buffer": "1m", "window": "2s"})), "t.yaml")
    lst = cfg.listeners[0]
    assert serves_h2(lst) and lst.http2_limits.max_concurrent_streams == 10
    assert lst.http2_limits.buffer == 1 << 20 and lst.http2_limits.window == 2.0


@pytest.mark.parametrize(("listener", "where", "why"), [
    ({"http2": True, "accept_proxy": True}, "listeners[0]", "accept_proxy"),
    ({"http2_limits": {"max_concurrent_streams": 0}}, "listeners[0].http2_limits.max_concurrent_streams", ""),
    ({"http2_limits": {"initial_window_size": 1000}}, "listeners[0].http2_limits.initial_window_size", ""),
    ({"http2_limits": {"max_frame_size": "32m"}}, "listeners[0].http2_limits.max_frame_size", ""),
    ({"http2_limits": {"max_rests": 1}}, "listeners[0].http2_limits.max_rests", ""),
])
def test_wrong_values_name_the_key(listener: dict[str, Any], where: str, why: str) -> None:
    probs = problems(config(**listener))
    assert any(p.startswith(where) and why in p for p in probs), probs


def test_http2_on_tcp_listener_is_refused() -> None:
    cfg = config(http2=True)
    cfg["listeners"][0]["mode"] = "tcp"
    probs = problems(cfg)
    assert any("http2 is for http listeners" in p for p in probs), probs


def test_server_proto() -> None:
    cfg = config()
    cfg["backends"][0]["servers"][0]["proto"] = "h2"
    assert load_text(yaml.safe_dump(cfg), "t.yaml").backends[0].servers[0].proto == "h2"
    cfg["backends"][0]["servers"][0]["proto"] = "h3"
    assert any(p.startswith("backends[0].servers[0].proto") for p in problems(cfg))
    cfg["backends"][0]["servers"][0].update(proto="h2c", tls={"verify": False})
    probs = problems(cfg)
    assert any(p.startswith("backends[0].servers[0]") and "h2c is HTTP/2 in clear text" in p for p in probs), probs

"""Session keys: client networks, header and parameter values."""

from __future__ import annotations

from pyvs.persist.table import header_pattern, header_value, query_param, source_key, value_key


def test_source_keys() -> None:
    assert source_key("10.1.2.3") == "10.1.2.3"
    assert source_key("10.1.2.3", 24) == "10.1.2.0/24"
    assert source_key("::ffff:10.1.2.3", 16) == "10.1.0.0/16"
    assert source_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:3:4:5:6", v6_prefix=128) == "2001:db8:1:2:3:4:5:6/128"
    assert source_key("") is None and source_key("not-an-ip", 24) is None and source_key("::zz") is None


def test_value_keys_are_hashes() -> None:
    k = value_key(b"secret-token")
    assert k is not None and len(k) == 24 and "secret" not in k
    assert value_key(b"secret-token") == k and value_key(b"other") != k
    assert value_key(b"") is None and value_key(b"x" * 5000) is None


def test_header_value() -> None:
    p = header_pattern("X-Token")
    block = b"GET / HTTP/1.1\r\nHost: a\r\nx-token:  abc def \t\r\nX-Token: second\r\n"
    assert header_value(block, p) == b"abc def"
    assert header_value(b"GET / HTTP/1.1\r\nX-Tokens: a\r\n", p) is None


def test_query_param() -> None:
    assert query_param(b"/a?x=1&sid=abc&sid=def", b"sid") == b"abc"
    assert query_param(b"/a?xsid=1", b"sid") is None
    assert query_param(b"/a?sid=1#frag", b"sid") == b"1"
    assert query_param(b"/a", b"sid") is None

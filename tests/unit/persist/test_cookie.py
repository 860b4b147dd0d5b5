"""The cookie codec as bytes in, bytes out."""

from __future__ import annotations

import pytest

from pyvs.persist.cookie import (
    CookieCodec,
    CookieSpec,
    CookieValue,
    b36,
    decode,
    encode,
    private_cache,
    server_id,
)

HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"


def test_server_ids_are_stable_opaque_and_distinct() -> None:
    a = server_id("web", "app1")
    assert a == server_id("web", "app1") and len(a) == 12 and a.isalnum()
    assert len({server_id("web", f"app{i}") for i in range(1000)}) == 1000
    assert server_id("api", "app1") != a


def test_value_round_trip() -> None:
    v = CookieValue("abc", 1_800_000_123, 1_800_000_000)
    assert decode(encode(v).encode()) == v
    assert decode(b"abc") == CookieValue("abc")
    assert b36(0) == "0" and int(b36(123456789), 36) == 123456789
    for bad in (b"", b"|1|2", b"a|1", b"a|x!|2", b"\xff"):
        assert decode(bad) is None


@pytest.mark.parametrize(("head", "found", "forwarded"), [
    (HEAD + b"Cookie: SID=s1\r\n", b"s1", HEAD),
    (HEAD + b"Cookie: a=1; SID=s1; b=2\r\n", b"s1", HEAD + b"Cookie: a=1; b=2\r\n"),
    (HEAD + b'Cookie: SID="s1"\r\nX: y\r\n', b"s1", HEAD + b"X: y\r\n"),
    (HEAD + b"cookie: XSID=1; SIDX=2\r\n", None, HEAD + b"cookie: XSID=1; SIDX=2\r\n"),
    (HEAD + b"Cookie: a=1\r\nCookie: SID=s2\r\n", b"s2", HEAD + b"Cookie: a=1\r\n"),
    (HEAD + b"Cookie: SID=s1; SID=s2\r\n", b"s1", HEAD),
    (HEAD + b"X-Note: SID=s1\r\n", None, HEAD + b"X-Note: SID=s1\r\n"),
    (HEAD, None, HEAD),
    (HEAD + b"Cookie: SID=s1;a=1\r\n", b"s1", HEAD + b"Cookie: a=1\r\n"),
    (HEAD + b"Cookie: a=1; SID=s1\r\n", b"s1", HEAD + b"Cookie: a=1\r\n"),
    (HEAD + b"Cookie: XSID=2; SID=s1\r\n", b"s1", HEAD + b"Cookie: XSID=2\r\n"),
    (HEAD + b"cookie: SID=s0\r\nCookie: SID=s1\r\n", b"s0", HEAD),
    (HEAD + b"COOKIE: a=1\r\nCookie: SID=s1; b=2\r\n", b"s1", HEAD + b"COOKIE: a=1\r\nCookie: b=2\r\n"),
    (HEAD + b"Cookie: SID=s1; SID=s2; c=3\r\n", b"s1", HEAD + b"Cookie: c=3\r\n"),
])
def test_insert_indirect_finds_and_strips(head: bytes, found: bytes | None, forwarded: bytes) -> None:
    codec = CookieCodec(CookieSpec("SID"))
    assert codec.from_request(head) == (found, forwarded)


@pytest.mark.parametrize("mode", ["insert", "rewrite"])
def test_fast_path_agrees_with_the_general_one(mode: str) -> None:
    codec = CookieCodec(CookieSpec("SID", mode=mode))
    for cookie in (b"SID=v", b"a=1; SID=v", b"SID=v; a=1", b"a=1; SID=v; b=2", b"SID=v;b=2", b"x=SID=v; SID=w"):
        head = HEAD + b"Cookie: " + cookie + b"\r\nX: 1\r\n"
        fast = codec._one_line(head)
        general = codec.from_request(head.replace(b"Cookie: ", b"cookie: "))
        if fast is not None:
            assert fast[0] == general[0] and fast[1].lower() == general[1].lower(), cookie


def test_prefix_strips_only_the_id() -> None:
    codec = CookieCodec(CookieSpec("JSESSIONID", mode="prefix"))
    assert codec.from_request(HEAD + b"Cookie: JSESSIONID=id1~app~x; o=1\r\n") == (
        b"id1", HEAD + b"Cookie: JSESSIONID=app~x; o=1\r\n")
    # Not prefixed (issued before persistence was configured): forwarded as is, no stickiness.
    assert codec.from_request(HEAD + b"Cookie: JSESSIONID=plain\r\n") == (
        None, HEAD + b"Cookie: JSESSIONID=plain\r\n")


def test_rewrite_forwards_unchanged() -> None:
    codec = CookieCodec(CookieSpec("SERVERID", mode="rewrite"))
    head = HEAD + b"Cookie: SERVERID=id1\r\n"
    assert codec.from_request(head) == (b"id1", head)


def test_check_applies_maxidle_maxlife_and_rejects_the_future() -> None:
    codec = CookieCodec(CookieSpec("S", maxidle=600, maxlife=3600))
    now = 1_800_000_000
    ok = encode(CookieValue("id", now - 100, now - 1000)).encode()
    assert codec.check(ok, now) == CookieValue("id", now - 100, now - 1000)
    idle = encode(CookieValue("id", now - 601, now - 1000)).encode()
    old = encode(CookieValue("id", now - 10, now - 3601)).encode()
    future = encode(CookieValue("id", now + 2 * 86400, now)).encode()
    inverted = encode(CookieValue("id", now - 500, now - 10)).encode()
    assert [codec.check(v, now) for v in (idle, old, future, inverted, b"id")] == [None] * 5
    assert codec.needs_refresh(CookieValue("id", now - 150, now - 1000), now)
    assert not codec.needs_refresh(CookieValue("id", now - 149, now - 1000), now)


def test_undated_codec_ignores_dates() -> None:
    codec = CookieCodec(CookieSpec("S"))
    assert codec.check(b"id|1|1", 0) == CookieValue("id")
    assert codec.set_cookie("id", 1e9) == b"Set-Cookie: S=id; path=/\r\n"
    assert not codec.needs_refresh(CookieValue("id"), 1e9)


def test_set_cookie_keeps_the_first_date() -> None:
    codec = CookieCodec(CookieSpec("S", maxlife=3600))
    line = codec.set_cookie("id", 2000.0, first=1000)
    assert line == f"Set-Cookie: S=id|{b36(2000)}|{b36(1000)}; path=/\r\n".encode()


RESP = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: SID=app; Path=/\r\nContent-Length: 0\r\n"


def test_edit_response_by_mode() -> None:
    assert CookieCodec(CookieSpec("SID")).edit_response(RESP, "id9") == (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n")
    assert CookieCodec(CookieSpec("SID", mode="rewrite")).edit_response(RESP, "id9") == RESP.replace(
        b"SID=app", b"SID=id9")
    assert CookieCodec(CookieSpec("SID", mode="prefix")).edit_response(RESP, "id9") == RESP.replace(
        b"SID=app", b"SID=id9~app")
    codec = CookieCodec(CookieSpec("SID"))
    assert codec.server_cookies(RESP) and not codec.server_cookies(RESP.replace(b"SID", b"XID"))


def test_private_cache() -> None:
    base = b"HTTP/1.1 200 OK\r\n"
    assert private_cache(base) == base + b"Cache-Control: private\r\n"
    assert private_cache(base + b"Cache-Control: public, max-age=60\r\n") == base + b"Cache-Control: private\r\n"
    kept = base + b"Cache-Control: no-store\r\n"
    assert private_cache(kept) == kept

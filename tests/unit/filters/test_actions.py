"""Respond, Deny and Redirect: replies built once, redirect templates."""

from __future__ import annotations

import pytest

from pyvs.l7.filters.actions import Deny, Redirect, Respond
from pyvs.l7.filters.base import Chain, Verdict
from tests.unit.filters.fake import FakeExchange


def _reply(f: Respond | Deny | Redirect, ex: FakeExchange | None = None) -> bytes:
    ex = ex or FakeExchange()
    assert f.on_request(ex) is Verdict.RESPOND
    assert ex.reply is not None
    return ex.reply.encode(close=False)


def test_respond_static_reply() -> None:
    f = Respond(200, "ok\n", {"Cache-Control": "max-age=60", "X-A": "1"})
    data = _reply(f)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: max-age=60\r\nX-A: 1\r\n"
                         b"Content-Length: 3\r\n\r\nok\n")
    a, b = FakeExchange(), FakeExchange()
    f.on_request(a)
    f.on_request(b)
    assert a.reply is b.reply
    assert f.requests and not f.responses and Chain((f,)).request == (f,)


def test_respond_bytes_body_content_type_and_head() -> None:
    f = Respond(503, b"<h1>down</h1>", content_type="text/html")
    ex = FakeExchange()
    f.on_request(ex)
    assert ex.reply is not None
    assert b"Content-Type: text/html\r\n" in ex.reply.encode(close=True)
    assert ex.reply.encode(close=False, head_request=True).endswith(b"Content-Length: 13\r\n\r\n")


def test_respond_empty_body_has_no_content_type() -> None:
    data = _reply(Respond(204))
    assert b"Content-Type" not in data


@pytest.mark.parametrize("kw", [
    {"status": 101},
    {"status": 600},
    {"status": 204, "body": "x"},
    {"headers": {"Content-Length": "3"}},
    {"headers": {"Transfer-Encoding": "chunked"}},
    {"headers": {"Connection": "close"}},
    {"headers": {"Content-Type": "text/html"}},
    {"headers": {"X-A": "1\r\nX-B: 2"}},
    {"headers": {"X A": "1"}},
    {"body": "x", "content_type": "text/plain\r\nX-B: 2"},
])
def test_respond_refuses_bad_configuration(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Respond(**kw)  # type: ignore[arg-type]


def test_deny() -> None:
    data = _reply(Deny())
    assert data.startswith(b"HTTP/1.1 403 ") and b"Cache-Control: no-store\r\n" in data
    assert data.endswith(b"\r\n\r\npyvs: access denied.\n")
    data = _reply(Deny(451, "gone for legal reasons"))
    assert data.startswith(b"HTTP/1.1 451 ") and data.endswith(b"\r\n\r\ngone for legal reasons")
    assert b"Content-Type" not in _reply(Deny(404, ""))
    with pytest.raises(ValueError):
        Deny(200)
    assert Deny(410).describe() == "deny with 410"


def _location(f: Redirect, raw: bytes | None = None, scheme: bytes = b"http") -> bytes:
    ex = FakeExchange(raw, scheme=scheme) if raw is not None else FakeExchange(scheme=scheme)
    data = _reply(f, ex)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"" and b"Content-Length: 0" in head and b"Cache-Control" not in head
    lines = [ln for ln in head.split(b"\r\n") if ln.startswith(b"Location: ")]
    assert len(lines) == 1
    return lines[0][len(b"Location: "):]


def test_redirect_with_query() -> None:
    f = Redirect("https://$host$path$query", 301)
    assert _location(f) == b"https://a.example/api/x?y=1"
    assert _reply(f).startswith(b"HTTP/1.1 301 ")


def test_redirect_without_query() -> None:
    f = Redirect("https://$host$path$query", 308)
    assert _location(f, b"GET /a/b HTTP/1.1\r\nHost: a.example:8080\r\n\r\n") == b"https://a.example:8080/a/b"
    assert _location(f, b"GET /a/b? HTTP/1.1\r\nHost: a.example\r\n\r\n") == b"https://a.example/a/b"


def test_redirect_scheme_braces_and_dollar() -> None:
    f = Redirect("$scheme://new.example${path}.html?price=$$5")
    assert _location(f, scheme=b"https") == b"https://new.example/api/x.html?price=$5"


def test_constant_redirect_shares_one_reply() -> None:
    f = Redirect("https://example.com/", 302)
    a, b = FakeExchange(), FakeExchange()
    f.on_request(a)
    f.on_request(b)
    assert a.reply is b.reply and a.reply is not None
    assert _location(f) == b"https://example.com/"


def test_redirect_absolute_form_request_uses_its_path() -> None:
    f = Redirect("https://$host$path$query")
    raw = b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n"
    assert _location(f, raw) == b"https://a.example/p?q=1"


def test_redirect_http10_without_host() -> None:
    assert _location(Redirect("https://$host$path"), b"GET /x HTTP/1.0\r\n\r\n") == b"https:///x"


@pytest.mark.parametrize(("to", "status", "match"), [
    ("https://$hostname/", 301, "hostname"),
    ("https://$host/$", 301, "lone"),
    ("https://${nope}/", 301, "nope"),
    ("https://x/ y", 301, "percent-encode"),
    ("https://x/\r\nSet-Cookie: a=1", 301, "percent-encode"),
    ("https://x/é", 301, "percent-encode"),
    ("", 301, "empty"),
    ("https://x/", 200, "status"),
    ("https://x/", 304, "status"),
])
def test_redirect_refuses_bad_configuration(to: str, status: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Redirect(to, status)


def test_describe() -> None:
    assert Redirect("https://$host$path", 301).describe() == "redirect 301 to https://$host$path"
    assert Respond(200, "ok", {"X-A": "1"}).describe() == "respond 200 with 2 bytes and X-A"

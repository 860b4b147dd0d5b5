"""Request and response heads: llhttp validation and the fields pyvs acts on, from bytes."""

from __future__ import annotations

import pytest

from pyvs.http import h1
from pyvs.http.errors import ProtocolError
from pyvs.http.h1 import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, parse_request_head, parse_response_head


@pytest.fixture(autouse=True, params=["scanner", "llhttp"])
def _path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case on both paths: with the C scanner (plain heads) and llhttp alone."""
    if request.param == "llhttp":
        monkeypatch.setattr(h1, "_scan_request", None)
        monkeypatch.setattr(h1, "_scan_response", None)


def test_simple_get_keeps_its_head_bytes() -> None:
    h = parse_request_head(b"GET /a?b=1 HTTP/1.1\r\nHost: h:81\r\nAccept: */*\r\n\r\n")
    assert (h.method, h.target, h.version, h.host) == (b"GET", b"/a?b=1", b"1.1", b"h:81")
    assert h.path == b"/a" and h.keep_alive and h.framing == NO_BODY and h.replayable
    assert h.block == b"GET /a?b=1 HTTP/1.1\r\nHost: h:81\r\nAccept: */*\r\n"


def test_content_length_and_chunked_framing() -> None:
    h = parse_request_head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    assert h.framing == LENGTH and h.length == 5 and b"Content-Length: 5" in h.block
    h = parse_request_head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert h.framing == CHUNKED and b"Transfer-Encoding" not in h.block


def test_hop_by_hop_and_connection_named_fields_are_removed() -> None:
    h = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nAccept: */*\r\n\r\n"
    )
    assert h.block == b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"


def test_plain_keepalive_connection_field_is_left_alone() -> None:
    h = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
    assert h.block.endswith(b"Connection: keep-alive\r\n") and h.keep_alive


def test_forwarding_fields_are_captured_and_removed() -> None:
    h = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n"
        b"Forwarded: for=3.3.3.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: e.com\r\n\r\n"
    )
    assert h.xff == b"1.1.1.1, 2.2.2.2" and h.forwarded == b"for=3.3.3.3"
    assert h.xf_proto == b"https" and h.xf_host == b"e.com"
    assert h.block == b"GET / HTTP/1.1\r\nHost: h\r\n"


def test_keep_alive_rules_and_expect() -> None:
    assert not parse_request_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert parse_request_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive
    assert not parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive
    # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding closes after it, keep-alive or not.
    h10 = parse_request_head(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert h10.framing == CHUNKED and not h10.keep_alive
    h = parse_request_head(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert h.expect_continue


def test_upgrade_needs_connection_upgrade() -> None:
    h = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert h.upgrade == b"websocket" and b"Upgrade" not in h.block
    h = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert h.upgrade is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nName : x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ],
)
def test_malformed_requests_are_rejected(raw: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request_head(raw)
    assert info.value.status == status


NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n"
         b"Connection: keep-alive\r\n\r\n")


def test_common_response_can_be_forwarded_byte_for_byte() -> None:
    rh = parse_response_head(NGINX, head_request=False)
    assert rh.raw_ok and rh.framing == LENGTH and rh.length == 100 and rh.keep_alive and rh.status == 200


def test_response_framings() -> None:
    rh = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head_request=False)
    assert rh.framing == CHUNKED and not rh.raw_ok and b"Transfer-Encoding" not in rh.block
    assert parse_response_head(NGINX, head_request=True).framing == NO_BODY
    assert parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n", head_request=False).framing == NO_BODY
    assert parse_response_head(b"HTTP/1.1 304 Not Modified\r\n\r\n", head_request=False).framing == NO_BODY
    assert parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", head_request=False).framing == NO_BODY
    rh = parse_response_head(b"HTTP/1.0 200 OK\r\nX: y\r\n\r\n", head_request=False)
    assert rh.framing == UNTIL_CLOSE and not rh.keep_alive and rh.block == b"HTTP/1.1 200 OK\r\nX: y\r\n"


def test_response_hop_by_hop_removed() -> None:
    rh = parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Content-Length: 0\r\n\r\n",
        head_request=False,
    )
    assert not rh.raw_ok and not rh.keep_alive
    assert rh.block == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"


def test_switching_protocols() -> None:
    rh = parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", head_request=False
    )
    assert rh.status == 101 and rh.upgrade == b"websocket" and rh.framing == NO_BODY


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_malformed_responses_are_rejected(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(raw, head_request=False)


def test_unusual_spellings_and_proxy_fields_are_classified() -> None:
    """Names not in the exact-spelling table go through lower-casing: still hop-by-hop."""
    h = parse_request_head(
        b"GET / HTTP/1.1\r\nHOST: h\r\nProxy-Foo: 1\r\nPROXY-BAR: 2\r\nX-Keep: 3\r\nCONTENT-LENGTH: 0\r\n\r\n"
    )
    assert h.host == b"h" and h.framing == LENGTH and h.length == 0
    assert h.block == b"GET / HTTP/1.1\r\nHOST: h\r\nX-Keep: 3\r\nCONTENT-LENGTH: 0\r\n"
    rh = parse_response_head(b"HTTP/1.1 200 OK\r\nproxy-thing: x\r\nCONTENT-LENGTH: 3\r\n\r\n", head_request=False)
    assert not rh.raw_ok and rh.framing == LENGTH and rh.length == 3
    assert rh.block == b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 3\r\n"


def test_keep_alive_in_any_spelling_keeps_heads_as_they_are() -> None:
    for value in (b"Keep-Alive", b"KEEP-ALIVE", b"keep-alive  "):
        rh = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: " + value + b"\r\nContent-Length: 0\r\n\r\n",
                                 head_request=False)
        assert rh.raw_ok and rh.keep_alive, value
        h = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: " + value + b"\r\n\r\n")
        assert b"\r\nConnection: " in h.block and h.keep_alive, value


def test_request_line_and_version_errors_come_before_the_coding_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request_head(b"GET / HTTP/2.0\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert info.value.status == 505


@pytest.mark.parametrize(
    "host", [b"example.com", b"example.com:8080", b"[::1]:80", b"10.0.0.1", b"a_b.local", b"%41b", b"h:", b""]
)
def test_valid_host_values_are_accepted(host: bytes) -> None:
    assert parse_request_head(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").host == host


@pytest.mark.parametrize(
    "host", [b"good.com, evil.com", b"a b", b"a:b:c", b"h:8x", b"[::1", b"[]", b"a/b", b"user@h", b"h?x", b"a]"]
)
def test_invalid_host_values_get_400(host: bytes) -> None:
    """RFC 9112 3.2: a request whose Host is not uri-host [":" port] gets 400 (it is
    routed on and forwarded in X-Forwarded-Host)."""
    with pytest.raises(ProtocolError, match="invalid Host") as exc:
        parse_request_head(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert exc.value.status == 400

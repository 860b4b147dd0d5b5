"""h2 <-> HTTP/1.1 head translation (pyvs/h2/headers.py): pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.h2.guard import CONTROL, RESETS, FloodGuard
from pyvs.h2.headers import CONNECTION_FIELDS, reply_parts, request_block, response_fields
from pyvs.http.errors import ProtocolError
from pyvs.http.h1 import CHUNKED, LENGTH, NO_BODY, parse_request_head
from pyvs.http.responses import error_response

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/p?q=1")]


def test_request_becomes_http11_with_authority_as_host() -> None:
    block, chunked = request_block([*BASE, (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")], True)
    assert not chunked
    assert block == b"GET /p?q=1 HTTP/1.1\r\nhost: a.test\r\naccept: */*\r\ncookie: a=1; b=2\r\n\r\n"
    head = parse_request_head(block)
    assert head.host == b"a.test" and head.framing == NO_BODY and head.method == b"GET"


def test_body_framing() -> None:
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/u")]
    block, chunked = request_block([*post, (b"content-length", b"5")], False)
    assert not chunked and parse_request_head(block).framing == LENGTH
    block, chunked = request_block(post, False)  # no length announced: chunked to the server
    assert chunked and parse_request_head(block).framing == CHUNKED
    block, chunked = request_block(post, True)  # empty POST: Content-Length: 0
    assert not chunked and b"content-length: 0\r\n" in block


def test_connection_specific_fields_are_not_forwarded() -> None:
    block, _ = request_block([*BASE, (b"te", b"trailers"), (b"host", b"other")], True)
    assert b"te:" not in block and b"other" not in block


@pytest.mark.parametrize("field", [
    (b"x-a", b"v\r\ntransfer-encoding: chunked"), (b"x-a", b"v\nx"), (b"x-a", b"v\x00"),
    (b"x-a:b", b"v"), (b"X-Upper", b"v"), (b"", b"v"), (b"x a", b"v"),
])
def test_fields_http1_cannot_carry_are_refused(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(ProtocolError):
        request_block([*BASE, field], True)


@pytest.mark.parametrize("pseudo", [(b":path", b"/a b"), (b":path", b""), (b":authority", b"a\r\nb"),
                                    (b":method", b"G ET")])
def test_bad_pseudo_fields_are_refused(pseudo: tuple[bytes, bytes]) -> None:
    fields = [f for f in BASE if f[0] != pseudo[0]] + [pseudo]
    with pytest.raises(ProtocolError):
        request_block(fields, True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)), max_size=6))
def test_no_field_can_add_a_line(fields: list[tuple[bytes, bytes]]) -> None:
    """Whatever a client puts in fields, the HTTP/1 head has exactly one line per field."""
    try:
        block, _ = request_block([*BASE, *fields], True)
    except ProtocolError:
        return
    skip = (b"cookie", b"host", *CONNECTION_FIELDS)
    # (pseudo-fields are h2's to validate: unknown ones are not forwarded)
    intended = 1 + sum(1 for name, _ in fields if name not in skip and name[:1] != b":") \
        + any(n == b"cookie" for n, _ in fields)
    assert block.count(b"\r\n") == 1 + intended + 1  # request line, one line per field, the empty line
    try:
        head = parse_request_head(block)
    except ProtocolError:
        return  # refused as a whole (a control character in a value): 400, never a second line
    assert head.fields == intended


def test_response_fields_strip_connection_specific() -> None:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n" \
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nUpgrade: x\r\n"
    assert response_fields(block) == [(b":status", b"200"), (b"content-type", b"text/plain"),
                                      (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_reply_parts_of_pyvs_answers() -> None:
    fields, body = reply_parts(error_response(503, True))
    assert fields[0] == (b":status", b"503") and (b"connection", b"close") not in fields
    assert dict(fields)[b"content-length"] == str(len(body)).encode()


def test_flood_guard_counts_per_window() -> None:
    g = FloodGuard(10.0, max_resets=3, max_control=2, max_empty=1)
    assert [g.hit(RESETS, 1.0) for _ in range(4)] == [False, False, False, True]
    assert not g.hit(CONTROL, 2.0) and not g.hit(CONTROL, 2.0) and g.hit(CONTROL, 2.0)
    assert not g.hit(RESETS, 11.5)  # a new window


@pytest.mark.parametrize("fields", [
    [*BASE[:3], (b"accept", b"*/*"), BASE[3]],  # a pseudo-field after a regular one
    [*BASE, (b":path", b"/again")],  # repeated
    [*BASE, (b":protocol", b"websocket")],  # not offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL)
    [*BASE, (b":status", b"200")],  # a response's
    [BASE[0], *BASE[2:]],  # no :scheme
    [*BASE, (b"connection", b"keep-alive")],  # connection-specific (RFC 9113 8.2.2)
    [*BASE, (b"transfer-encoding", b"chunked")],
    [*BASE, (b"te", b"gzip")],  # only "te: trailers" is allowed
])
def test_malformed_requests_are_refused(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ProtocolError):
        request_block(fields, True)

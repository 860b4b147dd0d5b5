"""The C head scanner (pyvs/http/_scan.c) against llhttp.

The scanner may refuse any head (llhttp then decides), but a head it accepts must
mean exactly what it means to the llhttp path: same request line, Host, framing,
keep-alive and forwarded bytes. These tests compare the two paths on every
single-byte substitution and insertion of realistic heads, and on generated heads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.http import h1
from pyvs.http.errors import ProtocolError

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n",  # wrk
    b"GET /a/b.html?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n"
    b"sec-ch-ua: \"Chromium\";v=\"156\", \"Not-A.Brand\";v=\"24\"\r\nUpgrade-Insecure-Requests: 1\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    b"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\nCookie: a=1; b=2\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nhost:h\r\nX-Empty:\r\n\r\n",
    b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
    b"Content-Length: 27\r\nAccept: */*\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 09:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"5f-1a\"\r\nCache-Control: max-age=60\r\n\r\n",
    b"HTTP/1.1 404 \r\ncontent-length:0\r\nSet-Cookie: s=1; Path=/; HttpOnly\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",  # delimited by the close
]


@pytest.fixture
def scanner() -> Iterator[None]:
    if h1._scan_request is None:
        pytest.fail("the C scanner is not built (pip install -e . needs a C compiler)")
    yield


def _digest(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in type(obj).__slots__ if not k.startswith("_")}


def _outcome(parse: Callable[[bytes], Any], block: bytes) -> Any:
    try:
        return _digest(parse(block))
    except ProtocolError as exc:
        return ("error", exc.status)


def _same(monkeypatch: pytest.MonkeyPatch, block: bytes) -> bool:
    """Both paths agree on ``block``; True when the scanner accepted it."""
    fast_req, fast_resp = h1._scan_request, h1._scan_response
    assert fast_req is not None and fast_resp is not None
    if block.startswith(b"HTTP/"):
        accepted = fast_resp(block, False) is not None
        parses: list[Callable[[bytes], Any]] = [
            lambda b: h1.parse_response_head(b, head_request=False),
            lambda b: h1.parse_response_head(b, head_request=True),
        ]
    else:
        accepted = fast_req(block) is not None
        parses = [h1.parse_request_head]
    for parse in parses:
        fast = _outcome(parse, block)
        with monkeypatch.context() as m:
            m.setattr(h1, "_scan_request", None)
            m.setattr(h1, "_scan_response", None)
            slow = _outcome(parse, block)
        assert fast == slow, block
    return accepted


def _cut(raw: bytes) -> bytes:
    """What the proxy would hand over: up to the first empty line."""
    raw += b"\r\n\r\n"
    return raw[: raw.find(b"\r\n\r\n") + 4]


def test_scanner_is_built_unless_turned_off() -> None:
    if os.environ.get("PYVS_NO_EXTENSIONS"):
        assert h1._scan_request is None
    else:
        assert h1._scan_request is not None, "make test installs pyvs with its C scanner"


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize("block", REQUESTS + RESPONSES)
def test_common_heads_take_the_scanner(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _same(monkeypatch, block)
    head = h1.parse_response_head(block, head_request=False) if block.startswith(b"HTTP/") \
        else h1.parse_request_head(block)
    for name in type(head).__slots__:  # the scanner's copy of the template left no slot empty
        getattr(head, name)


def test_scanner_results_are_independent_objects() -> None:
    a = h1.parse_request_head(REQUESTS[0])
    b = h1.parse_request_head(REQUESTS[1])
    a.block += b"X: 1\r\n"
    assert a is not b and b.block == REQUESTS[1][:-2] and type(a) is h1.RequestHead


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize(
    "block",
    [
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",  # not HTTP/1.1
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",  # absolute form
        b"GET / HTTP/1.1\r\n\r\n",  # no Host (400)
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts (400)
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",  # space before the colon (400)
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obs-fold (400)
        b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",  # NUL
        b"GET / HTTP/1.1\r\nHost: h\r\nX: \xe9\r\n\r\n",  # obs-text: llhttp's call
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",  # chunked body
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",  # two (400)
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890123456\r\n\r\n",  # 16 digits
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Authorization: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n",  # no space after the code
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: good.com, evil.com\r\n\r\n",  # invalid Host (400)
        b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    ],
)
def test_heads_outside_the_subset_are_left_to_llhttp(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _same(monkeypatch, block)


def _variants(block: bytes) -> Iterator[bytes]:
    """Every single-byte substitution and insertion (before the final empty line)."""
    body = block[:-2]
    for i in range(len(body)):
        for b in range(256):
            one = bytes((b,))
            yield _cut(body[:i] + one + body[i + 1 :])
            yield _cut(body[:i] + one + body[i:])


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize("block", REQUESTS[:2] + REQUESTS[3:] + RESPONSES[:3])
def test_every_one_byte_change_means_the_same_on_both_paths(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = sum(_same(monkeypatch, v) for v in set(_variants(block)))
    assert accepted > 100  # the comparison covered heads the scanner took, not only refusals


_NAMES = [
    b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
    b"Upgrade", b"Expect", b"Keep-Alive", b"TE", b"Trailer", b"Proxy-Connection", b"Proxy-X", b"proxy",
    b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded", b"Accept", b"X-A", b"Hostx",
    b"Content-Lengthx", b"Connectio", b"Te", b"Bad Name", b"Host ", b"",
]
_VALUES = [
    b"", b"h", b"0", b"12", b"007", b"-1", b"1 2", b"99999999999999999999", b"keep-alive", b"Keep-Alive",
    b"KEEP-ALIVE ", b"close", b"keep-alive, close", b"chunked", b"gzip, chunked", b"100-continue", b"websocket",
    b"1.2.3.4", b" a\tb ", b"\xe9", b"a\x7fb", b"h:80", b"h:", b"h:8x", b"a:b:c", b"[::1]:8080", b"[::1",
    b"[]", b"a]", b"[v1.x]", b"good.com, evil.com", b"a/b", b"a@b", b"%41_~.x", b"h?x",
]

_SEPS = [b": ", b":", b":\t", b" : "]


@st.composite
def _heads(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        code = draw(st.sampled_from([b"200", b"204", b"304", b"404", b"503", b"101", b"199", b"600"]))
        start = draw(st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/1.1  "])) + code + b" OK"
    else:
        method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"DELETE", b"PATCH", b"TRACE", b"get", b"FOO"]))
        target = draw(st.sampled_from([b"/", b"/a?b", b"/%zz", b"/#f", b"/a b", b"*", b"http://h/"]))
        start = method + b" " + target + b" " + draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    lines = [start]
    for name, sep, value in draw(
        st.lists(
            st.tuples(st.sampled_from(_NAMES), st.sampled_from(_SEPS), st.sampled_from(_VALUES)),
            max_size=6,
        )
    ):
        lines.append(name + sep + value)
    return _cut(b"\r\n".join(lines) + b"\r\n")


@pytest.mark.usefixtures("scanner")
@settings(max_examples=2000, derandomize=True, deadline=None)
@given(_heads())
def test_generated_heads_mean_the_same_on_both_paths(block: bytes) -> None:
    with pytest.MonkeyPatch.context() as m:
        _same(m, block)


@pytest.mark.usefixtures("scanner")
@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_scanned_without_harm(raw: bytes) -> None:
    for prefix in (b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n"):
        block = _cut(prefix + raw)
        with pytest.MonkeyPatch.context() as m:
            _same(m, block)


@pytest.mark.parametrize("cls", [h1.RequestHead, h1.ResponseHead])
def test_head_defaults_are_immutable(cls: type) -> None:
    """The scanner copies one template instance per class: a mutable default (a list,
    a dict) would be shared by every head it builds."""
    template = cls()
    for name in cls.__slots__:
        assert isinstance(getattr(template, name), bytes | int | str | tuple | type(None)), name


@pytest.mark.usefixtures("scanner")
def test_a_failed_bind_leaves_the_scanner_as_it_was() -> None:
    """bind() is all or nothing: a template without a slot the scanner sets is refused,
    and the scans go on with the templates bound before."""
    from pyvs.http import _scan

    class Partial:
        __slots__ = ("block",)

    with pytest.raises(TypeError, match="no slot status"):
        _scan.bind(h1.RequestHead(), Partial())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="__slots__"):
        _scan.bind(object(), h1.ResponseHead())  # type: ignore[arg-type]
    rh = h1.parse_response_head(RESPONSES[0], head_request=False)
    assert type(rh) is h1.ResponseHead and (rh.status, rh.length) == (200, 100)
    assert h1.parse_request_head(REQUESTS[0]).host == b"127.0.0.1:18080"

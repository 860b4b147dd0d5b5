"""Path rewriting in the request line: strip/add prefix, regex, query kept."""

from __future__ import annotations

import pytest

from pyvs.http.h1 import parse_request_head
from pyvs.l7.filters.base import Verdict
from pyvs.l7.filters.rewrite import PathRewrite
from tests.unit.filters.fake import FakeExchange


def _run(f: PathRewrite, target: bytes) -> FakeExchange:
    ex = FakeExchange(b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\nX-Internal: 1\r\n\r\n")
    assert f.on_request(ex) is Verdict.CONTINUE
    return ex


def _target(f: PathRewrite, target: bytes) -> bytes:
    ex = _run(f, target)
    assert ex.head is not None
    line = ex.head.block.split(b"\r\n", 1)[0]
    assert line == b"GET " + ex.head.target + b" HTTP/1.1"
    assert ex.head.block.endswith(b"\r\nHost: a.example\r\nX-Internal: 1\r\n")
    return ex.head.target


def test_strip_prefix_keeps_the_query_and_edits_block_and_target() -> None:
    ex = _run(PathRewrite(strip_prefix="/api"), b"/api/x?y=1")
    assert ex.head is not None
    assert ex.head.target == b"/x?y=1"
    assert ex.head.block == b"GET /x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Internal: 1\r\n"
    assert ex.view.path == b"/api/x"  # the view keeps the request as the client sent it
    parse_request_head(ex.forwarded())


@pytest.mark.parametrize(("target", "expected"), [
    (b"/api", b"/"),
    (b"/api?q", b"/?q"),
    (b"/api/", b"/"),
    (b"/api/a/b", b"/a/b"),
    (b"/apix", b"/apix"),  # not at a segment boundary
    (b"/other/api/x", b"/other/api/x"),
    (b"/", b"/"),
])
def test_strip_prefix_only_at_a_segment_boundary(target: bytes, expected: bytes) -> None:
    assert _target(PathRewrite(strip_prefix="/api"), target) == expected


def test_strip_prefix_with_trailing_slash() -> None:
    f = PathRewrite(strip_prefix="/api/")
    assert _target(f, b"/api/x") == b"/x"
    assert _target(f, b"/api") == b"/"
    assert _target(f, b"/apix") == b"/apix"


def test_add_prefix() -> None:
    assert _target(PathRewrite(add_prefix="/v2"), b"/x?a=b") == b"/v2/x?a=b"
    assert _target(PathRewrite(add_prefix="/v2/"), b"/x") == b"/v2/x"
    assert _target(PathRewrite(add_prefix="/v2"), b"/") == b"/v2/"


def test_strip_then_add() -> None:
    assert _target(PathRewrite(strip_prefix="/api", add_prefix="/internal"), b"/api/x?y=1") == b"/internal/x?y=1"


def test_regex_with_groups_first_match_only() -> None:
    f = PathRewrite(regex=r"/user/(\d+)", replace=r"/u/\1")
    assert _target(f, b"/user/42/user/7?z") == b"/u/42/user/7?z"
    f = PathRewrite(regex=r"/(?P<a>\w+)/(?P<b>\w+)", replace=r"/\g<b>/\g<a>")
    assert _target(f, b"/x/y") == b"/y/x"
    assert _target(f, b"/") == b"/"  # no match: unchanged


def test_regex_result_gets_a_leading_slash() -> None:
    assert _target(PathRewrite(regex=r"^/old/", replace=""), b"/old/page") == b"/page"
    assert _target(PathRewrite(regex=r"^/", replace=""), b"/") == b"/"


def test_regex_then_add_prefix() -> None:
    assert _target(PathRewrite(regex=r"\.php$", replace=".html", add_prefix="/static"), b"/a.php?x") == \
        b"/static/a.html?x"


def test_no_change_leaves_the_head_untouched() -> None:
    ex = FakeExchange()
    assert ex.head is not None
    block = ex.head.block
    PathRewrite(strip_prefix="/other").on_request(ex)
    assert ex.head.block is block


def test_absolute_form_keeps_scheme_and_authority() -> None:
    assert _target(PathRewrite(strip_prefix="/api"), b"http://a.example/api/x?y=1") == b"http://a.example/x?y=1"
    assert _target(PathRewrite(add_prefix="/v"), b"http://a.example?y=1") == b"http://a.example/v/?y=1"


def test_asterisk_is_not_rewritten() -> None:
    ex = FakeExchange(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    PathRewrite(add_prefix="/v2").on_request(ex)
    assert ex.head is not None and ex.head.target == b"*"


def test_longer_method_splices_at_the_right_place() -> None:
    ex = FakeExchange(b"OPTIONS /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    PathRewrite(strip_prefix="/api").on_request(ex)
    assert ex.head is not None and ex.head.block == b"OPTIONS /x HTTP/1.1\r\nHost: a\r\n"


@pytest.mark.parametrize("kw", [
    {},
    {"regex": "/a"},
    {"replace": "/b"},
    {"regex": "(", "replace": "x"},
    {"regex": "/(a)", "replace": r"/\2"},
    {"regex": "/(?P<a>x)", "replace": r"/\g<b>"},
    {"regex": "/a", "replace": "/b?c=1"},
    {"regex": "/a", "replace": "/b c"},
    {"strip_prefix": "api"},
    {"strip_prefix": "/"},
    {"add_prefix": "/a b"},
    {"add_prefix": "/a?b"},
])
def test_bad_configurations_are_refused(kw: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        PathRewrite(**kw)


def test_describe() -> None:
    f = PathRewrite(strip_prefix="/api", add_prefix="/v2", regex="^/a", replace="/b")
    assert f.describe() == "path rewrite: strip prefix /api, then replace ^/a by /b, then add prefix /v2"


def test_view_keeps_the_clients_path_whether_or_not_routing_read_it() -> None:
    for read_first in (False, True):
        ex = FakeExchange()
        if read_first:
            assert ex.view.path == b"/api/x"
        PathRewrite(strip_prefix="/api").on_request(ex)
        assert (ex.view.path, ex.view.query) == (b"/api/x", b"y=1")


@pytest.mark.parametrize("replace", [r"/x\040HTTP/1.1", r"/x\r\nX-Injected:1", r"/\0", r"/\12", r"/\t"])
def test_escapes_that_would_expand_to_refused_bytes_are_refused(replace: str) -> None:
    with pytest.raises(ValueError, match="backslash"):
        PathRewrite(regex=r"^/(.*)", replace=replace)

"""Request and response header editing, on heads parsed by the real codec."""

from __future__ import annotations

import pytest

from pyvs.http.h1 import parse_request_head, parse_response_head
from pyvs.l7.filters.base import Chain, Verdict
from pyvs.l7.filters.headers import RequestHeaders, ResponseHeaders
from tests.unit.filters.fake import FakeExchange, response

# ---------------------------------------------------------------- requests


def test_set_replaces_and_remove_deletes_editing_the_block() -> None:
    f = RequestHeaders(set={"X-Env": "prod"}, remove=["X-Internal"])
    ex = FakeExchange()
    assert f.on_request(ex) is Verdict.CONTINUE
    assert ex.head is not None
    assert ex.head.block == b"GET /api/x?y=1 HTTP/1.1\r\nHost: a.example\r\n"
    assert ex.add_lines == [b"X-Env: prod\r\n"]
    assert ex.reply is None


def test_set_removes_what_the_client_sent_under_any_case() -> None:
    raw = b"GET / HTTP/1.1\r\nhost: h\r\nx-env: dev\r\nAccept: */*\r\nX-ENV: test\r\n\r\n"
    ex = FakeExchange(raw)
    RequestHeaders(set={"X-Env": "prod"}).on_request(ex)
    assert ex.forwarded() == b"GET / HTTP/1.1\r\nhost: h\r\nAccept: */*\r\nX-Env: prod\r\n\r\n"


def test_remove_several_same_named_fields_case_insensitively() -> None:
    raw = (b"GET / HTTP/1.1\r\nX-Internal: 1\r\nHost: h\r\nx-internal: 2\r\nX-Internal-Id: keep\r\n"
           b"X-INTERNAL:3\r\nX-Other: 4\r\nX-Debug: 5\r\n\r\n")
    ex = FakeExchange(raw)
    RequestHeaders(remove=["x-internal", "X-DEBUG"]).on_request(ex)
    assert ex.head is not None
    assert ex.head.block == b"GET / HTTP/1.1\r\nHost: h\r\nX-Internal-Id: keep\r\nX-Other: 4\r\n"
    assert ex.add_lines == []


def test_add_keeps_existing_fields_and_order_of_configuration() -> None:
    ex = FakeExchange()
    RequestHeaders(set={"B": "1"}, add={"X-Internal": "2", "A": "3"}).on_request(ex)
    assert ex.head is not None
    assert b"X-Internal: 1\r\n" in ex.head.block
    assert ex.add_lines == [b"B: 1\r\n", b"X-Internal: 2\r\n", b"A: 3\r\n"]


def test_the_forwarded_head_is_valid_http() -> None:
    ex = FakeExchange(variables={"client_ip": b"127.0.0.1"})
    RequestHeaders(set={"X-Env": "prod", "Host": "backend.local:8080"}, add={"X-A": "%{client_ip}"},
                   remove=["X-Internal"]).on_request(ex)
    again = parse_request_head(ex.forwarded())
    assert again.host == b"backend.local:8080"
    assert again.block == (b"GET /api/x?y=1 HTTP/1.1\r\nX-Env: prod\r\nHost: backend.local:8080\r\n"
                           b"X-A: 127.0.0.1\r\n")


def test_set_host_is_allowed_and_head_host_keeps_the_clients() -> None:
    ex = FakeExchange()
    RequestHeaders(set={"Host": "internal"}).on_request(ex)
    assert ex.head is not None
    assert ex.head.block == b"GET /api/x?y=1 HTTP/1.1\r\nX-Internal: 1\r\n"
    assert ex.add_lines == [b"Host: internal\r\n"]
    assert ex.head.host == b"a.example"


def test_templated_values_are_rendered_per_request_and_cleaned() -> None:
    f = RequestHeaders(set={"X-Request-Id": "%{request_id}", "X-Const": "c"}, add={"X-Via": "pyvs %{route}"})
    ex = FakeExchange(variables={"request_id": b"r1\r\nX-Evil: 1", "route": b"api"})
    f.on_request(ex)
    assert ex.add_lines == [b"X-Request-Id: r1X-Evil: 1\r\n", b"X-Const: c\r\n", b"X-Via: pyvs api\r\n"]
    assert sorted(ex.asked) == ["request_id", "route"]
    parse_request_head(ex.forwarded())  # still one field per line


def test_constant_lines_ask_for_nothing() -> None:
    ex = FakeExchange()
    RequestHeaders(add={"X-A": "1", "X-B": "2"}).on_request(ex)
    assert ex.add_lines == [b"X-A: 1\r\n", b"X-B: 2\r\n"] and ex.asked == []


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection", "Keep-Alive", "TE", "Trailer",
                                  "Upgrade", "Proxy-Authorization", "Proxy-Connection", "X-Forwarded-For",
                                  "x-forwarded-proto", "X-Forwarded-Host", "Forwarded"])
@pytest.mark.parametrize("how", ["set", "add", "remove"])
def test_managed_request_fields_are_refused(name: str, how: str) -> None:
    kw = {"remove": [name]} if how == "remove" else {how: {name: "x"}}
    with pytest.raises(ValueError, match=name):
        RequestHeaders(**kw)


def test_host_may_be_set_but_not_removed_or_added() -> None:
    RequestHeaders(set={"host": "x"})
    with pytest.raises(ValueError, match="Host"):
        RequestHeaders(remove=["Host"])
    with pytest.raises(ValueError, match="Host"):
        RequestHeaders(add={"Host": "x"})


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "X-Bad\r\n", "Xé", "X\tY", "(x)"])
def test_names_must_be_tokens(name: str) -> None:
    with pytest.raises(ValueError, match="field name"):
        RequestHeaders(set={name: "v"})
    with pytest.raises(ValueError, match="field name"):
        ResponseHeaders(remove=[name])


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "\r\n\r\nbody"])
def test_values_with_cr_lf_or_controls_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        RequestHeaders(set={"X-A": value})
    with pytest.raises(ValueError, match="control character"):
        ResponseHeaders(add={"X-A": value})


def test_tab_and_non_ascii_values_are_allowed() -> None:
    ex = FakeExchange()
    RequestHeaders(add={"X-A": "a\tb", "X-B": "café"}).on_request(ex)
    assert ex.add_lines == [b"X-A: a\tb\r\n", "X-B: café\r\n".encode()]


def test_contradictions_and_empty_config_are_refused() -> None:
    with pytest.raises(ValueError, match="removed and set"):
        RequestHeaders(set={"X-A": "1"}, remove=["x-a"])
    with pytest.raises(ValueError, match="removed and add"):
        ResponseHeaders(add={"X-A": "1"}, remove=["X-A"])
    with pytest.raises(ValueError, match="set twice"):
        RequestHeaders(set={"X-A": "1", "x-a": "2"})
    with pytest.raises(ValueError, match="nothing"):
        RequestHeaders()
    with pytest.raises(ValueError, match="nothing"):
        ResponseHeaders(set={}, add={}, remove=[])


def test_server_is_not_known_when_the_request_is_edited() -> None:
    with pytest.raises(ValueError, match="server"):
        RequestHeaders(set={"X-S": "%{server}"})
    ResponseHeaders(set={"X-S": "%{server}"})


def test_unknown_template_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        RequestHeaders(set={"X-A": "%{nope}"})


def test_headless_exchange_is_left_alone() -> None:
    ex = FakeExchange()
    ex.head = None
    assert RequestHeaders(set={"X-A": "1"}).on_request(ex) is Verdict.CONTINUE


def test_flags_chain_and_describe() -> None:
    req = RequestHeaders(set={"X-A": "1"}, add={"X-B": "2"}, remove=["X-C"])
    resp = ResponseHeaders(remove=["Server"])
    chain = Chain((req, resp))
    assert chain.request == (req,) and chain.response == (resp,)
    assert req.describe() == "request headers: set X-A; add X-B; remove X-C"
    assert resp.describe() == "response headers: remove Server"
    assert not hasattr(req, "__dict__")


# ---------------------------------------------------------------- responses


def test_raw_response_loses_its_connection_line_and_raw_ok() -> None:
    rh = response()
    assert rh.raw_ok and b"Connection: keep-alive" in rh.block
    f = ResponseHeaders(set={"Cache-Control": "no-store"}, remove=["Server"])
    assert f.on_response(FakeExchange(), rh) is Verdict.CONTINUE
    assert not rh.raw_ok
    assert rh.block == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n"


def test_rebuilt_response_is_edited_the_same_way() -> None:
    rh = response(b"HTTP/1.0 200 OK\r\nServer: a\r\nSERVER: b\r\nX-Powered-By: php\r\nContent-Length: 2\r\n\r\n")
    assert not rh.raw_ok
    ResponseHeaders(remove=["server", "x-powered-by"], add={"Set-Cookie": "a=1"}).on_response(FakeExchange(), rh)
    assert rh.block == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n"
    assert not rh.raw_ok


def test_response_set_and_add_with_templates() -> None:
    rh = response(b"HTTP/1.1 200 OK\r\nX-Served-By: old\r\nContent-Length: 2\r\n\r\n")
    ex = FakeExchange(variables={"server": b"s1\r\n", "backend": b"web"})
    ResponseHeaders(set={"X-Served-By": "%{backend}/%{server}"}, add={"X-Static": "1"}).on_response(ex, rh)
    assert rh.block == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: web/s1\r\nX-Static: 1\r\n"
    again = parse_response_head(rh.block + b"\r\n", head_request=False)
    assert again.length == 2


def test_response_framing_and_hop_fields_are_refused_but_host_is_not_special() -> None:
    for name in ("Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Proxy-Authenticate"):
        with pytest.raises(ValueError, match=name):
            ResponseHeaders(set={name: "1"})
    ResponseHeaders(remove=["X-Forwarded-For"])  # only requests reserve the forwarding fields

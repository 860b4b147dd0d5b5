"""%{name} templates: compile-time errors, which variables are asked for, CR/LF removal."""

from __future__ import annotations

import pytest

from pyvs.l7.filters.variables import VARIABLES, Template, clean
from tests.unit.filters.fake import FakeExchange


def test_constant_template_renders_precompiled_bytes_without_asking() -> None:
    t = Template("static 100%% and 50% done")
    ex = FakeExchange()
    assert t.constant == b"static 100% and 50% done"
    assert t.render(ex) is t.constant
    assert ex.asked == [] and t.names == ()


def test_only_the_names_used_are_asked_for() -> None:
    t = Template("%{client_ip} via %{route}/%{client_ip}")
    ex = FakeExchange(variables={"client_ip": b"10.0.0.1", "route": b"api"})
    assert t.render(ex) == b"10.0.0.1 via api/10.0.0.1"
    assert sorted(set(ex.asked)) == ["client_ip", "route"]
    assert t.names == ("client_ip", "route") and t.constant is None


def test_single_variable_and_escapes() -> None:
    ex = FakeExchange(variables={"request_id": b"abc"})
    assert Template("%{request_id}").render(ex) == b"abc"
    assert Template("%%{request_id}").render(ex) == b"%{request_id}"
    assert Template("%%%{request_id}%%").render(ex) == b"%abc%"
    assert Template("").render(ex) == b""


def test_every_documented_name_compiles() -> None:
    for name in VARIABLES:
        assert Template(f"%{{{name}}}").names == (name,)


@pytest.mark.parametrize(("source", "name"), [("%{nope}", "nope"), ("x %{Client_IP}", "Client_IP"), ("%{}", ""),
                                             ("%{ host}", " host")])
def test_unknown_name_is_refused_naming_it(source: str, name: str) -> None:
    with pytest.raises(ValueError, match="unknown variable") as err:
        Template(source)
    assert f"%{{{name}}}" in str(err.value)


def test_unterminated_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        Template("a %{host")


def test_values_cannot_inject_cr_lf_or_nul() -> None:
    ex = FakeExchange(variables={"request_id": b"x\r\nSet-Cookie: evil\r\n\r\n", "path": b"/a\x00b\nc"})
    assert Template("%{request_id}").render(ex) == b"xSet-Cookie: evil"
    assert Template("id=%{request_id} p=%{path}").render(ex) == b"id=xSet-Cookie: evil p=/abc"
    assert clean(b"a\rb\nc\x00d") == b"abcd"


def test_literal_text_is_utf8() -> None:
    assert Template("café").constant == "café".encode()


def test_the_exchange_answers_every_variable_templates_accept() -> None:
    """One list: a name a template accepts must be one the exchange can render."""
    from pyvs.l7.context import VARIABLES as RENDERED
    from pyvs.l7.filters.variables import VARIABLES as ACCEPTED

    assert set(RENDERED) == set(ACCEPTED)

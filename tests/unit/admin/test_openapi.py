"""The OpenAPI file shipped with the package describes exactly the admin app's routes."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import yaml

from pyvs.admin.server import make_app


def documented() -> set[tuple[str, str]]:
    doc: dict[str, Any] = yaml.safe_load(files("pyvs.admin").joinpath("openapi.yaml").read_text())
    assert doc["openapi"].startswith("3.")
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}


def live(token: bytes | None = None) -> set[tuple[str, str]]:
    app = make_app(object(), token)  # type: ignore[arg-type]  # registration calls nothing on it
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        out.add((route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", str(path))))
    return out


def test_every_live_route_is_documented() -> None:
    assert live() - documented() == set()


def test_every_documented_route_is_live() -> None:
    assert documented() - live() == set()


def test_the_same_routes_with_a_token() -> None:
    assert live(b"secret") == live()


def test_every_path_parameter_is_declared() -> None:
    doc: dict[str, Any] = yaml.safe_load(files("pyvs.admin").joinpath("openapi.yaml").read_text())
    params = doc["components"]["parameters"]
    for path, ops in doc["paths"].items():
        declared = set()
        for p in ops.get("parameters", []):
            p = params[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
            declared.add(p["name"])
        assert set(re.findall(r"\{(\w+)\}", path)) <= declared, path


def test_every_reference_resolves() -> None:
    text = files("pyvs.admin").joinpath("openapi.yaml").read_text()
    doc: dict[str, Any] = yaml.safe_load(text)
    for kind, name in re.findall(r"#/components/(\w+)/(\w+)", text):
        assert name in doc["components"][kind], f"#/components/{kind}/{name}"

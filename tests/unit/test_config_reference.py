"""docs/configuration.md documents every config key, and nothing that is not a key.

The key list is computed from the pydantic models (``pyvs.config.schema.Config`` and
everything reachable from it), so adding a field without documenting it fails here,
and so does removing or renaming one while its entry stays in the reference. Each
entry's heading is the dotted path in backticks (``listeners[].forwarded.via``); its
body states the type, the default and where the key is used, and the stated default
is checked against the schema.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from pyvs.config.schema import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# A heading that is nothing but a backticked dotted path: "### `listeners[].routes[].match.host`".
_HEADING = re.compile(r"^#{1,6}\s+`([^`]+)`\s*$")
_PATH = re.compile(r"[a-z_][a-z0-9_]*(?:\[\])?(?:\.[a-z_][a-z0-9_]*(?:\[\])?)*")
_ANY_HEADING = re.compile(r"^#{1,6}\s")


# ---------------------------------------------------------------- the model tree


def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model class inside ``annotation`` (if any) and whether it sits in a list.

    Handles ``Model``, ``list[Model]``, ``Model | None``, ``Optional[list[Model]]`` and
    ``Annotated[...]``; scalars, ``Literal`` and ``list[str]`` give ``(None, ...)``.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return _submodel(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        found = [_submodel(a) for a in get_args(annotation) if a is not type(None)]
        models = [f for f in found if f[0] is not None]
        assert len(models) <= 1, f"cannot document a union of several models: {annotation!r}"
        return models[0] if models else (None, any(is_list for _, is_list in found))
    if origin is list:
        model, _ = _submodel(get_args(annotation)[0])
        return model, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def config_fields(
    model: type[BaseModel] = Config, prefix: str = "", seen: set[type[BaseModel]] | None = None
) -> dict[str, FieldInfo]:
    """Every documented path -> its field, e.g. ``listeners[].forwarded.trusted_proxies``.

    A key is named by its alias when it has one (``global``, not ``global_``); a list
    of sections adds ``[]`` to the path of the keys inside it. A section model met a
    second time (a server's ``health`` has the backend's ``health`` keys) is
    documented once, where it first appears; the second place names only the key.
    """
    seen = set() if seen is None else seen
    out: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        out[path] = field
        sub, is_list = _submodel(field.annotation)
        if sub is not None and sub not in seen:
            seen.add(sub)
            out.update(config_fields(sub, path + ("[]" if is_list else "") + ".", seen))
    return out


FIELDS = config_fields()


# ---------------------------------------------------------------- the document


def doc_entries() -> list[tuple[str, str]]:
    """(path, body) for every heading of the reference that is a backticked path."""
    entries: list[tuple[str, str]] = []
    current: str | None = None
    body: list[str] = []
    in_fence = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and _ANY_HEADING.match(line):
            if current is not None:
                entries.append((current, "\n".join(body)))
            m = _HEADING.match(line)
            current = m.group(1) if m and _PATH.fullmatch(m.group(1)) else None
            body = []
        elif current is not None:
            body.append(line)
    if current is not None:
        entries.append((current, "\n".join(body)))
    return entries


@pytest.fixture(scope="module")
def entries() -> dict[str, str]:
    assert DOC.is_file(), f"{DOC} is missing"
    return dict(doc_entries())


# ---------------------------------------------------------------- the walker itself


def test_walker_sees_the_whole_tree() -> None:
    # Guards against a walker bug making the checks below vacuous.
    for path in (
        "global",
        "global.workers",
        "admin.listen",
        "demo.servers",
        "demo.servers[].listen",
        "listeners",
        "listeners[].bind",
        "listeners[].routes[].match",
        "listeners[].routes[].match.path_prefix",
        "listeners[].forwarded.trusted_proxies",
        "listeners[].timeouts.request",
        "backends[].servers[].address",
        "backends[].timeouts.total",
        "backends[].pool.idle_timeout",
    ):
        assert path in FIELDS, path
    assert not [p for p in FIELDS if "global_" in p]
    assert len(FIELDS) >= 40


# ---------------------------------------------------------------- the checks


def test_every_key_is_documented(entries: dict[str, str]) -> None:
    missing = sorted(set(FIELDS) - set(entries))
    assert not missing, f"{DOC.name} has no entry (a heading like ### `path`) for: " + ", ".join(missing)


def test_no_entry_for_a_key_that_does_not_exist(entries: dict[str, str]) -> None:
    stale = sorted(set(entries) - set(FIELDS))
    assert not stale, f"{DOC.name} documents keys the schema does not have: " + ", ".join(stale)


def test_no_key_documented_twice() -> None:
    paths = [p for p, _ in doc_entries()]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    assert not twice, f"{DOC.name} has more than one entry for: " + ", ".join(twice)


def test_every_entry_states_type_default_and_where(entries: dict[str, str]) -> None:
    incomplete = [
        f"{path} (no {label})"
        for path, body in sorted(entries.items())
        for label in ("**Type:**", "**Default:**", "**Where:**")
        if label not in body
    ]
    assert not incomplete, "entries lacking a line: " + ", ".join(incomplete)


def _stated_default(body: str) -> str | None:
    """The first backticked value after **Default:**, or None when it says "required"."""
    m = re.search(r"\*\*Default:\*\*\s*(.*)", body)
    assert m is not None
    text = m.group(1).strip()
    if text.lower().startswith("required") or text.lower().startswith("none (required"):
        return None
    value = re.match(r"`([^`]*)`", text)
    assert value is not None, f"default not in backticks: {text!r}"
    return value.group(1)


def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    """Validates a value exactly as the field does (units, constraints, nested models)."""
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation)


def test_stated_defaults_match_the_schema(entries: dict[str, str]) -> None:
    wrong = []
    for path, field in FIELDS.items():
        body = entries.get(path)
        if body is None or "**Default:**" not in body:
            continue  # reported by the tests above
        stated = _stated_default(body)
        if stated is None:
            if not field.is_required():
                wrong.append(f"{path}: documented as required, the default is {field.get_default()!r}")
            continue
        if field.is_required():
            wrong.append(f"{path}: documented default `{stated}`, but the key is required")
            continue
        actual = field.get_default(call_default_factory=True)
        try:
            value = _adapter(field).validate_python(yaml.safe_load(stated))
        except Exception as exc:
            wrong.append(f"{path}: documented default `{stated}` is not a valid value ({exc})")
            continue
        if value != actual:
            wrong.append(f"{path}: documented default `{stated}` means {value!r}, the schema says {actual!r}")
    assert not wrong, "\n".join(wrong)


def test_every_field_has_a_description() -> None:
    bare = sorted(p for p, f in FIELDS.items() if not (f.description or "").strip())
    assert not bare, "fields without a description (shown by `pyvs config schema`): " + ", ".join(bare)

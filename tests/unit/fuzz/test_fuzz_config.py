"""Fuzz: the config loader (pyvs/config/loader.py load_text).

Whatever the text, ``load_text`` returns a Config or raises ConfigError with one-line
problems; any other exception is a bug (``pyvs check`` would print a traceback). The
inputs: random YAML-ish documents built from the schema's own key names (so that
validation goes deep), random text from YAML's special characters, and mutations of
valid configs (every YAML example in docs/ and README.md that loads, and the embedded
default): keys deleted, renamed or added, values replaced by other YAML values of any
type, list items duplicated or dropped, and line-level edits of the text.
"""

from __future__ import annotations

import copy
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pyvs.config.loader import ConfigError, default_text, load_text
from pyvs.config.schema import Config

from .oracles import check_config_text, fuzz

ROOT = Path(__file__).resolve().parents[3]


def _seeds() -> list[str]:
    texts = [default_text()]
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        texts += re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    out = []
    for t in texts:
        try:
            load_text(t)
        except ConfigError:
            continue
        out.append(t)
    return out


SEEDS = _seeds()
SEED_DATA = [yaml.safe_load(t) for t in SEEDS]


def _keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    out: set[str] = set()
    for name, info in model.model_fields.items():
        out.add(info.alias or name)
        stack = [info.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out |= _keys(ann, seen)
            elif get_origin(ann) is not None or isinstance(ann, types.UnionType):
                stack.extend(get_args(ann))
            elif get_origin(ann) is Union:
                stack.extend(get_args(ann))
    return out


KEYS = sorted(_keys(Config, set()))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 70000), st.sampled_from([2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "127.0.0.1:8080", "[::1]:80", "0.0.0.0:0", "10s", "100ms", "1h", "-1s", "1e9s",
                     "roundrobin", "http", "tcp", "udp", "~(", "~^/a", "/a", "*.example.com", ".x", "v1", "v2",
                     "10.0.0.0/8", "eth0", "GET", "true", "null", "\x00", "\ud7ff", "é", "a" * 300]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from([1, 1.5, True, None, "", "x-unknown"]), st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@fuzz(150)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_random_documents_from_schema_keys(doc: dict[str, Any]) -> None:
    check_config_text(yaml.safe_dump(doc, allow_unicode=True))


@fuzz(300)
@given(st.text(alphabet="abc:-[]{}&*!|>'\"%@`#,?\n \t0123456789.~/", max_size=80))
def test_random_yaml_ish_text(text: str) -> None:
    check_config_text(text)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths[1:] or paths))
        if not path:
            break
        parent, last = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "delete", "rename", "add", "dup", "wrap", "unwrap"]))
        if op == "replace":
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(KEYS), st.just(str(last) + "s"), st.just(str(last).upper())))
            parent[new] = parent.pop(last)
        elif op == "add":
            target = parent[last]
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS))] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
        elif op == "dup" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif op == "wrap":
            parent[last] = [parent[last]]
        elif op == "unwrap" and isinstance(parent[last], list | dict) and parent[last]:
            inner = parent[last]
            parent[last] = inner[0] if isinstance(inner, list) else next(iter(inner.values()))
        if not paths:
            break
    text = yaml.safe_dump(doc, allow_unicode=True)
    if draw(st.booleans()):  # and a line-level edit
        lines = text.splitlines()
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        edit = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "colon"]))
        if lines:
            if edit == "drop":
                del lines[i]
            elif edit == "dup":
                lines.insert(i, lines[i])
            elif edit == "indent":
                lines[i] = "  " + lines[i]
            elif edit == "dedent":
                lines[i] = lines[i].lstrip()
            else:
                lines[i] = lines[i].replace(":", "", 1)
        text = "\n".join(lines)
    return text


def test_there_are_seeds() -> None:
    assert len(SEEDS) >= 5, "the docs' YAML examples are the mutation seeds"


@fuzz(200)
@given(mutated_configs())
def test_mutated_valid_configs(text: str) -> None:
    check_config_text(text)


@fuzz(200)
@given(st.sampled_from(SEEDS), st.integers(0, 10**6), st.sampled_from(list(":-[]{}&*!|>'\"#,\n \t0~")))
def test_one_character_changes_of_valid_configs(text: str, at: int, ch: str) -> None:
    i = at % (len(text) + 1)
    check_config_text(text[:i] + ch + text[i + 1 :])
    check_config_text(text[:i] + ch + text[i:])


@pytest.mark.parametrize("text", ["[" * 1000, "x: " + "[" * 1000 + "]" * 1000, "- " * 1000 + "x"])
def test_deep_nesting_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        load_text(text)

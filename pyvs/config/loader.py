"""Load a YAML file into a validated :class:`Config`, with errors that name the key.

``ConfigError.problems`` is a list of ``"path: reason"`` strings such as
``backends[0].servers[1].address: expected host:port, got 'x'`` -- the same text
``pyvs check`` prints, one per line.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pyvs.config.schema import Config


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        where = _loc(loc)
        # Cross-reference errors already carry their own path ("listeners[0].backend: ..."),
        # several to a message, one per line.
        for line in msg.split("\n"):
            if not where and ":" in line.split(" ", 1)[0]:
                problems.append(line)
            else:
                problems.append(f"{where or '(top level)'}: {line}")
    return problems


def load_text(text: str, source: str = "<config>") -> Config:
    """Parse and validate YAML text."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    except RecursionError:
        raise ConfigError(source, ["invalid YAML: nested too deeply"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def load_file(path: str | Path) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from None
    return load_text(text, str(p))


def default_text() -> str:
    """The embedded default configuration (two demo backends behind 127.0.0.1:8080)."""
    return importlib.resources.files("pyvs.config").joinpath("default.yaml").read_text(encoding="utf-8")


def load_default() -> Config:
    return load_text(default_text(), "<embedded default>")

"""Shared by the atheris targets: the repo on sys.path, and one way to run a target.

Each target feeds atheris's bytes to a ``check_*`` oracle of tests/unit/fuzz/oracles.py
(the same properties the bounded Hypothesis tests check in the suite). Not run by CI;
see docs/fuzzing.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(test_one_input: Callable[[bytes], None]) -> None:
    import atheris  # pip install atheris (not a dependency of pyvs)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

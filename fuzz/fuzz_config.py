"""atheris target: the config loader (YAML text -> Config or ConfigError, nothing else).

    python fuzz/fuzz_config.py fuzz/corpus/config -max_total_time=3600 -dict=fuzz/config.dict

Seed fuzz/corpus/config with the embedded default and the docs' examples first
(docs/fuzzing.md). Known bug: a document nested ~500 deep raises RecursionError.
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports():
    from pyvs.config import loader  # noqa: F401  (instrumented for coverage)
    from tests.unit.fuzz.oracles import check_config_text


def test_one_input(data: bytes) -> None:
    check_config_text(data.decode("utf-8", errors="replace"))


if __name__ == "__main__":
    _common.run(test_one_input)

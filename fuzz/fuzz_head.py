"""atheris target: HTTP request and response heads, C scanner and llhttp paths.

    python fuzz/fuzz_head.py fuzz/corpus/head -max_total_time=3600
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports():
    from pyvs.http import h1  # noqa: F401  (instrumented for coverage)
    from tests.unit.fuzz.oracles import check_head, cut


def test_one_input(data: bytes) -> None:
    check_head(cut(data))


if __name__ == "__main__":
    _common.run(test_one_input)

"""atheris target: the chunked framer; the first byte chooses up to 8 cut points.

    python fuzz/fuzz_chunked.py fuzz/corpus/chunked -max_total_time=3600
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports():
    from pyvs.http import framing  # noqa: F401  (instrumented for coverage)
    from tests.unit.fuzz.oracles import check_chunked


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(0, 4200) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    check_chunked(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts)


if __name__ == "__main__":
    _common.run(test_one_input)

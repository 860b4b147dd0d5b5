"""atheris target: the PROXY protocol v1/v2 parser.

    python fuzz/fuzz_proxy.py fuzz/corpus/proxy -max_total_time=3600
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports():
    from pyvs.l4 import proxyproto  # noqa: F401  (instrumented for coverage)
    from tests.unit.fuzz.oracles import check_proxy_bytes


def test_one_input(data: bytes) -> None:
    check_proxy_bytes(data)


if __name__ == "__main__":
    _common.run(test_one_input)

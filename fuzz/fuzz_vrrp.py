"""atheris target: VRRP v2/v3 payloads and IPv4 datagrams (decode, validate, parse_ipv4).

    python fuzz/fuzz_vrrp.py fuzz/corpus/vrrp -max_total_time=3600
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports():
    from pyvs.ha import packet  # noqa: F401  (instrumented for coverage)
    from tests.unit.fuzz.oracles import check_vrrp_bytes


def test_one_input(data: bytes) -> None:
    check_vrrp_bytes(data)


if __name__ == "__main__":
    _common.run(test_one_input)

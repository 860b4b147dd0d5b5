"""A small DNS load test: bench/dns.py for one short round, pyvs and NSD in the same run.

The figure is answers per CPU-second of each server (not per wall second, which on a
shared 2-core machine measures contention). The floor asserted here is far below what
pyvs does (about 0.6 of NSD on the project's machines, docs/dns.md): it catches a
responder that stopped answering or fell off its precomputed path, not a few percent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_queries_per_cpu_second_against_nsd() -> None:
    assert Path("/usr/sbin/nsd").exists(), "nsd is missing: run the tests through `make test`"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "dns.py"), "--seconds", "2", "--repeat", "1",
                          "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    rates = result["answers_per_cpu_second"]
    assert rates["nsd"] > 0 and rates["pyvs"] > 0, result
    assert result["pyvs_vs_nsd"] > 0.15, result

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.harness import LoopThread


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session", autouse=True)
def _need_curl() -> None:
    # `make test` installs curl (scripts/apt-ensure.sh); a missing curl is a setup bug.
    assert shutil.which("curl"), "curl is missing: run the tests through `make test`"

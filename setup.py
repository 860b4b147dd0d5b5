"""Build step for the optional C helpers (pyvs/http/_scan.c, pyvs/shared/_zone.c, ...).

Everything else is declared in pyproject.toml. The extension is ``optional``: where no
C compiler is available the install still succeeds and pyvs validates every head with
httptools alone (slower, same behaviour).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("pyvs.http._scan", ["pyvs/http/_scan.c"], optional=True),
    # Atomic words and locked tables in shared memory (pyvs/shared); pure-Python twin
    # in pyvs/shared/pyzone.py.
    Extension("pyvs.shared._zone", ["pyvs/shared/_zone.c"], optional=True),
    # The end-of-request traffic update (pyvs/runtime/stats.py observe_py is its twin).
    Extension("pyvs.runtime._traffic", ["pyvs/runtime/_traffic.c"], optional=True),
    # Session-ticket keys rotated on a clock, the same in every worker (pyvs/tls/tickets.py;
    # needs the OpenSSL 3 headers, Debian libssl-dev; without it OpenSSL's own keys are used).
    Extension("pyvs.tls._tickets", ["pyvs/tls/_tickets.c"], libraries=["ssl", "crypto"], optional=True),
])

"""Build step for the optional C scanner (pyvs/http/_scan.c).

Everything else is declared in pyproject.toml. The extension is ``optional``: where no
C compiler is available the install still succeeds and pyvs validates every head with
httptools alone (slower, same behaviour).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pyvs.http._scan", ["pyvs/http/_scan.c"], optional=True)])

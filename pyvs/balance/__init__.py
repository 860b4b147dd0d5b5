"""Schedulers: one module per algorithm family, registered by name in :mod:`pyvs.balance.base`."""

from __future__ import annotations

import importlib

_MODULES = ("roundrobin",)


def load_all() -> None:
    """Import every scheduler module so its classes register themselves."""
    for mod in _MODULES:
        importlib.import_module(f"pyvs.balance.{mod}")

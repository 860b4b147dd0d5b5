"""Schedulers: one module per algorithm family, registered by name in :mod:`pyvs.balance.base`.

=================  ==================================================================
module             algorithms
=================  ==================================================================
``roundrobin``     ``roundrobin`` (smooth weighted), ``static-rr``
``randomized``     ``random``, ``weighted-random``, ``p2c``
``leastconn``      ``leastconn``, ``weighted-leastconn``, ``sed``, ``nq``, ``first``
``latency``        ``response-time``, ``peak-ewma``
``capacity``       ``capacity`` (agent-reported weights)
``hashing``        ``source``, ``uri``, ``header()``, ``cookie()``, ``param()``, ``maglev``
=================  ==================================================================

Helpers without algorithms: ``weighttree`` (Fenwick tree), ``keyhash`` (keys and the
hash function), ``ring`` (consistent-hash ring), ``maglev`` (Maglev table) and
``slowstart`` (weight ramps).
"""

from __future__ import annotations

import importlib

_MODULES = ("roundrobin", "randomized", "leastconn", "latency", "capacity", "hashing")


def load_all() -> None:
    """Import every scheduler module so its classes register themselves."""
    for mod in _MODULES:
        importlib.import_module(f"pyvs.balance.{mod}")

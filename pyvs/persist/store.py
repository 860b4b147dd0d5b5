"""The store interface: where a pyvs instance's stick tables are shared beyond it.

Theory of operation
-------------------
Within one instance the supervisor's :class:`~pyvs.persist.hub.StickHub` holds the
authoritative tables and fans entries out to the workers. A *store* decides what
happens beyond the instance:

* :class:`MemoryStore` (the default): nothing -- sessions are shared by the workers
  of one instance only.
* :class:`~pyvs.persist.redis_store.RedisStore` (``state: {redis: URL}``): entries are
  written to Redis in batches and other nodes' entries arrive from it, so nodes behind
  VRRP or ECMP agree on a client's server.

A store never blocks its caller: :meth:`Store.write` queues, and what comes back from
elsewhere is handed to the hub through the :class:`Sink` callbacks.

Write operations:

``LEARN``
    "this key was first seen with this server": the first writer wins. If the key
    already names another server, that server is the answer and the writer corrects
    its tables. Refreshes of a live entry are LEARNs of the same value.
``MOVE``
    "this key now goes to this server" (a redispatch, or a key the server itself
    issued in a response): overwrites.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

LEARN: Final = "l"
MOVE: Final = "m"
OPS = frozenset({LEARN, MOVE})

# (key, server name, remaining seconds)
Remote = tuple[str, str, float]


class Sink(Protocol):
    """What a store reports to (the hub)."""

    def on_remote(self, backend: str, entries: list[Remote]) -> None:
        """Entries that come from elsewhere (another node, or a conflict's winner)."""

    def backends(self) -> list[str]:
        """Names of the backends that keep a stick table."""

    def local_entries(self) -> Iterable[tuple[str, str, str, float]]:
        """Every live local entry as ``(backend, key, server, remaining seconds)``."""


class Store(Protocol):
    kind: str

    def start(self) -> None:
        """Begin background work (call from inside the running loop)."""

    async def stop(self) -> None: ...

    def write(self, backend: str, key: str, server: str, op: str, ttl: float) -> None:
        """Queue one operation; never waits."""

    def statistics(self) -> dict[str, Any]: ...


class MemoryStore:
    """The default: tables live only in this instance's supervisor."""

    kind = "memory"

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def write(self, backend: str, key: str, server: str, op: str, ttl: float) -> None:
        pass

    def statistics(self) -> dict[str, Any]:
        return {"kind": self.kind}

"""Choosing a server that has room: the scheduler's pick, bounded by ``maxconn``.

Schedulers (:mod:`pyvs.balance`) decide *who* among the usable servers; they do not
enforce ``servers[].maxconn`` (only ``first`` reads it). The layer-4 proxies must, so
this asks the scheduler, and when the answer is a server at its limit, asks again
with that server excluded. Weights and hashing therefore still decide among the
servers that have room; only when none has room does the caller queue (TCP) or drop
(UDP). Shared by :mod:`pyvs.l4.tcp` and :mod:`pyvs.l4.udp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pyvs.balance.base import PickContext

if TYPE_CHECKING:
    from pyvs.upstream.server import BackendRuntime, ServerState

FULL: Final = "full"
"""Result of :func:`pick_with_room` when servers exist but every one is at its maxconn."""

_EMPTY = PickContext()  # shared by picks that read nothing (non-hashing algorithms, no exclusions)


def pick_with_room(backend: BackendRuntime, client_ip: str, tried: frozenset[int]) -> ServerState | str | None:
    """A server below its maxconn, :data:`FULL`, or None when no server is usable.

    ``tried`` are servers this connection already failed to reach; like every
    exclusion it is dropped by the scheduler when nothing else is left.
    """
    exclude = tried
    scheduler = backend.scheduler
    words = backend.shared_counts
    if words is not None:  # count-reading schedulers see the instance's counts
        for s in backend.servers:
            s.target.outstanding = max(0, words.get(s.slot))
    for _ in range(len(backend.servers) + 1):
        if backend.needs_context:
            ctx = PickContext(client_ip=client_ip, exclude=exclude)
        elif exclude:
            ctx = PickContext(exclude=exclude)
        else:
            ctx = _EMPTY
        target = scheduler.pick(ctx)
        if target is None:
            return None
        server = backend.by_index[target.index]
        # The instance-wide count (every worker's sessions); checked, then taken by the
        # caller: two workers admitting at the same instant may pass one over the limit.
        if not target.maxconn or server.shared_active() < target.maxconn:
            return server
        if target.index in exclude:  # the scheduler fell back to an excluded one: all are full
            return FULL
        exclude = exclude | server.index_set
    return FULL

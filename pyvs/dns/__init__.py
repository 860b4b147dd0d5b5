"""Authoritative DNS responder and global (multi-site) balancing (docs/dns.md).

Importing this package costs nothing: dnspython is imported only by a worker whose
config has a ``mode: dns`` listener (:func:`start_dns`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvs.dns.responder import DnsRuntime
    from pyvs.runtime.worker import WorkerRuntime


async def start_dns(worker: WorkerRuntime) -> DnsRuntime | None:
    """Bind and start the worker's dns listeners; None when the config has none."""
    if not any(lc.mode == "dns" for lc in worker.cfg.listeners):
        return None
    from pyvs.dns.responder import DnsRuntime

    return await DnsRuntime.start(worker)

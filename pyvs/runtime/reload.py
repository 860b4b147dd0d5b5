"""Reload: what a new config changes in the supervisor's long-lived state.

The supervisor (:meth:`pyvs.runtime.supervisor.Supervisor.reload`) validates the new
config, starts a new generation of workers on the same listening sockets and retires
the old one. The functions here carry over what did not change:

* :func:`compare` lists what a reload cannot apply (it keeps the running part and
  says that a restart is needed) -- the admin endpoint, VRRP, demo servers,
  ``global.workers``, ``state``. Kernel data planes are replaced by the supervisor once
  the new workers are ready (:meth:`pyvs.l4.kernel.KernelDataPlanes.replace`).
* :func:`carry_health` re-targets the running :class:`~pyvs.health.manager.HealthManager`
  at the new config in place: a server with the same backend, name, address and check
  keeps its health state (no DOWN/rise cycle); other servers start afresh. The manager
  object stays the same, so VRRP tracking that refers to it keeps working.
* :func:`carry_persist` keeps the stick table of every backend whose persistence
  settings did not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvs.config.schema import Config

if TYPE_CHECKING:
    from pyvs.health.manager import HealthManager
    from pyvs.persist.hub import StickHub


def compare(old: Config, new: Config) -> list[str]:
    """What ``new`` changes that a reload does not apply (one sentence each)."""
    notes: list[str] = []
    if old.admin != new.admin:
        notes.append(f"admin settings changed: not applied, the admin endpoint stays on {old.admin.listen} "
                     "with its old settings (restart pyvs to apply)")
    if old.vrrp != new.vrrp:
        notes.append("vrrp changed: not applied, the running VRRP instances continue unchanged "
                     "(restart pyvs to apply)")
    if old.demo != new.demo:
        notes.append("demo servers changed: not applied (restart pyvs to apply)")
    if old.state != new.state:
        notes.append("state (shared-state store) changed: not applied (restart pyvs to apply)")
    if old.global_.workers != new.global_.workers:
        notes.append("global.workers changed: not applied, the number of workers stays the same "
                     "(restart pyvs to apply)")
    return notes


async def carry_health(hm: HealthManager, cfg: Config) -> int:
    """Point ``hm`` at ``cfg``; return how many servers kept their health state."""
    from pyvs.health.manager import Entry
    from pyvs.health.outlier import Ejector

    await hm.stop()  # the check loops; restarted below for the new set of servers
    old_backends = {b.name: b for b in hm.cfg.backends}
    entries = {}
    kept = 0
    for b in cfg.backends:
        for s in b.servers:
            fresh = Entry(b, s)
            e = hm.entries.get((b.name, s.name))
            if e is not None and e.server.address == fresh.server.address and e.check == fresh.check:
                e.backend, e.server = b, s
                e.target = fresh.target  # (its proto and TLS settings may have changed)
                entries[(b.name, s.name)] = e
                kept += 1
            else:
                entries[(b.name, s.name)] = fresh
    ejectors = {}
    for b in cfg.backends:
        if b.passive is None:
            continue
        was = old_backends.get(b.name)
        ej = hm.ejectors.get(b.name)
        if ej is not None and was is not None and was.passive == b.passive and len(was.servers) == len(b.servers):
            ejectors[b.name] = ej
        else:
            ejectors[b.name] = Ejector(b.passive, len(b.servers))
    hm.cfg, hm.entries, hm.ejectors = cfg, entries, ejectors
    hm.start()
    return kept


async def carry_persist(hub: StickHub | None, old: Config, new: Config,
                        broadcast: Callable[[dict[str, Any]], None]) -> StickHub | None:
    """The stick-table hub for ``new``: the running one with the tables of unchanged
    backends kept, a new (started) one if there was none, None if ``new`` needs none."""
    from pyvs.persist.hub import StickHub
    from pyvs.persist.table import StickTable

    wanted = [b for b in new.backends if b.persistence is not None and b.persistence.uses_table]
    if not wanted:
        if hub is not None:
            await hub.stop()
        return None
    if hub is None:
        made = StickHub.create(new, broadcast)
        if made is not None:
            made.start()
        return made
    before = {b.name: b.persistence for b in old.backends}
    tables = {}
    for b in wanted:
        p = b.persistence
        assert p is not None
        t = hub.tables.get(b.name)
        tables[b.name] = t if t is not None and before.get(b.name) == p else StickTable(p.timeout, p.max_entries)
    hub.tables = tables
    return hub

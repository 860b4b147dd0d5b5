"""Worker generations: how a reload replaces the running workers without losing a request.

The half of :class:`pyvs.runtime.supervisor.Supervisor` that a reload needs, as its
base class (the supervisor owns the state; it is declared here for the type checker).
A reload validates the new config with the loader ``pyvs check`` uses, binds the
addresses it adds, forks generation n+1 -- worker *i* on the listening sockets of
worker *i* of generation n (:class:`pyvs.runtime.sockets.SlotSockets`) -- and once all
of it is ready, retires generation n: SIGTERM, drain up to ``global.grace``, exit.
A refused config, or a new generation that fails to start, leaves generation n as it
was. What carries over is decided in :mod:`pyvs.runtime.reload`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from typing import TYPE_CHECKING, Any

from pyvs.runtime.sockets import SlotSockets, slot_addresses
from pyvs.shared.state import SharedState

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from pyvs.config.schema import Config
    from pyvs.health.manager import HealthManager
    from pyvs.runtime.supervisor import WorkerHandle

log = logging.getLogger("pyvs")

READY_TIMEOUT = 15.0  # workers that are not ready by then are logged, not waited for


class Generations:
    """Reload: replace the worker generation (see the module docstring)."""

    cfg: Config
    source: str
    nworkers: int
    slots: SlotSockets
    health: HealthManager
    persist: Any
    shared: SharedState
    cache_paths: set[str]  # every cache.path a generation used (removed at exit)
    reload_old: list[WorkerHandle]  # the generation being replaced, while a reload runs
    kernel: Any  # pyvs.l4.kernel.KernelDataPlanes, set when the loop starts
    workers: dict[int, WorkerHandle]
    generation: int
    reloads: int
    retiring: list[WorkerHandle]
    stopping: bool
    running: bool
    last_reload: dict[str, Any] | None
    _reload_lock: asyncio.Lock | None

    if TYPE_CHECKING:
        def _bind_listeners(self, cfg: Config) -> str | None: ...
        def spawn(self, index: int, cfg: Config | None = None) -> WorkerHandle: ...
        def _watch(self, h: WorkerHandle) -> None: ...
        def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> None: ...
        broadcast: Callable[[dict[str, Any]], None]

    async def reload(self, path: str | None, config: Config | None = None) -> dict[str, Any]:
        """Load ``path`` (default: the file pyvs runs from), validate it, and replace the
        workers with a generation running it. Returns ``{"ok": bool, "errors": [...],
        "notes": [...], "generation": n}``; a refused config changes nothing. ``config``,
        when given, is run instead of the file (the admin API's runtime server changes,
        pyvs/admin/actions.py); the source stays, so the next reload reads the file."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            result = await self._reload(path, config)
        self.last_reload = {**result, "at": round(time.time(), 3)}
        if result["ok"]:
            for note in result["notes"]:
                log.warning("reload: %s", note)
        else:
            log.error("reload refused, the running config stays (generation %d):%s", self.generation,
                      "".join(f"\n  {e}" for e in result["errors"]))
        return result

    async def _reload(self, path: str | None, config: Config | None = None) -> dict[str, Any]:
        from pyvs.config.loader import ConfigError, load_default, load_file
        from pyvs.runtime import reload as carry

        def refused(*errors: str) -> dict[str, Any]:
            return {"ok": False, "errors": list(errors), "notes": [], "generation": self.generation,
                    "config": source}

        source = path or self.source
        if self.stopping or not self.running:
            return refused("pyvs is not running (starting or stopping)")
        try:
            new = config or (load_default() if source == "<embedded default>" else load_file(source))
        except ConfigError as err:
            return refused(*(f"{err.source}: {p}" for p in err.problems))
        except OSError as exc:
            return refused(f"{source}: {why(exc)}")
        old = self.cfg
        from pyvs.runtime.privileges import resolve
        from pyvs.shared.state import cache_sections

        for where, section in cache_sections(new):  # the shared cache's directory (as at start)
            if not os.path.isdir(section.path):
                return refused(f"{where}.cache.path: {section.path} is not a directory")
            self.cache_paths.add(section.path)
        new_shared = SharedState(new, self.nworkers)  # the new generation's zone
        try:
            new_shared.open_caches(resolve(new.global_.user, new.global_.group))
        except ValueError as exc:
            new_shared.close()
            return refused(str(exc))
        before = set(self.slots.by_addr)
        problem = self._bind_listeners(new)
        if problem is not None:
            for addr in set(self.slots.by_addr) - before:
                self.slots.remove(addr)
            new_shared.close()
            return refused(problem)
        log.info("reload: config %s is valid; starting worker generation %d", source, self.generation + 1)
        notes = carry.compare(old, new)
        kept = await carry.carry_health(self.health, new)
        self.persist = await carry.carry_persist(self.persist, old, new, self.broadcast)
        # The new generation, worker i on the sockets of worker i of the old one.
        old_workers = self.workers
        self.reload_old = list(old_workers.values())  # still serving: SIGUSR1 reaches them too
        old_shared = self.shared
        self.shared = new_shared
        self.generation += 1
        self.workers = {}
        self.cfg = new
        for i in range(self.nworkers):
            self._watch(self.spawn(i, new))
        new_workers = list(self.workers.values())
        deadline = time.monotonic() + READY_TIMEOUT
        failure: str | None = None
        while not self.stopping:
            if all(h.ready for h in new_workers):
                break
            dead = [h for h in new_workers if h.failure or (h.exited is not None and h.exited.is_set())]
            if dead:
                d = dead[0]
                failure = d.failure or f"worker {d.index} of the new generation exited with {d.exit_code}"
                break
            if time.monotonic() > deadline:
                failure = f"the new workers were not ready in {READY_TIMEOUT:.0f} s"
                break
            await asyncio.sleep(0.02)
        if failure is not None or self.stopping:
            # Back to the old generation; stop the new one.
            self.workers, self.cfg, self.shared = old_workers, old, old_shared
            self.reload_old = []
            self.generation -= 1
            for h in new_workers:
                h.retired = True
                if h.pid:
                    self.retiring.append(h)
                    os.kill(h.pid, signal.SIGTERM)
            await carry.carry_health(self.health, old)
            self._spawn_task(self._release_zones(new_workers))
            self.persist = await carry.carry_persist(self.persist, new, old, self.broadcast)
            for h in list(old_workers.values()):
                if not h.pid and not self.stopping and self.workers.get(h.index) is h:
                    # Died while the reload ran: its exit was not ours to handle then
                    # (the new generation held its slot). Back in charge (health and
                    # stick tables restored first, for its "ready"): restart it.
                    self._watch(self.spawn(h.index))
            for addr in set(self.slots.by_addr) - before:
                self.slots.remove(addr)
            return refused(failure or "pyvs is stopping")
        # Everyone of the new generation is ready (each got the health and stick-table
        # snapshot with its "ready"): the old one stops accepting and drains.
        old_handles = [h for h in old_workers.values() if h.pid]
        for h in old_workers.values():
            h.retired = True
        self.retiring.extend(old_handles)
        self.reload_old = []
        for h in old_handles:
            try:
                os.kill(h.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._spawn_task(self._after_retire(old_handles))
        notes += self._replace_kernel(new)
        self.source = source
        self.reloads += 1
        log.info("reload: generation %d running from %s (%d server(s) kept their health state); "
                 "%d old worker(s) draining (grace %.0fs)", self.generation, source, kept,
                 len(old_handles), new.global_.grace)
        return {"ok": True, "errors": [], "notes": notes, "generation": self.generation, "config": source}

    def _replace_kernel(self, new: Config) -> list[str]:
        """The kernel data planes follow the new config (nftables tables replaced
        atomically, pyvs/l4/kernel.py), then get the current health of their servers.
        A refusal by the kernel is a note: the rest of the reload stands, and the
        listener it names keeps what it had."""
        kernel = self.kernel
        if kernel is None:
            return []
        from pyvs.l4.kernel import KernelDataPlaneError

        try:
            notes: list[str] = kernel.replace(new)
        except KernelDataPlaneError as exc:
            log.error("reload: kernel data plane: %s", exc)
            return [f"kernel data plane not replaced: {exc}"]
        now = time.monotonic()  # the health manager's clock (slow-start ramps)
        for entry in self.health.entries.values():
            kernel.on_server_message(entry.message(now))
        return notes

    async def _release_zones(self, handles: list[WorkerHandle]) -> None:
        """Once every worker of a generation is gone, give back its shared zone (each
        reload makes one: without this each would keep a memfd, inherited by every
        worker forked later)."""
        await all_exited(handles, self.cfg.global_.grace + 15)
        for zone in {id(h.shared): h.shared for h in handles if h.shared is not None}.values():
            if zone is not self.shared and not any(w.shared is zone and w.pid for w in
                                                   [*self.workers.values(), *self.retiring]):
                zone.close()  # (its cache zones' descriptors too)
                # Cache sections the current config no longer has: their objects go too.
                kept = {a.directory for state in {id(w.shared): w.shared for w in
                                                  [*self.workers.values(), *self.retiring]
                                                  if w.shared is not None and w.pid}.values()
                        for a in state.caches.values()} | {a.directory for a in self.shared.caches.values()}
                for area in zone.caches.values():
                    if area.directory not in kept:
                        shutil.rmtree(area.directory, ignore_errors=True)

    async def _after_retire(self, handles: list[WorkerHandle]) -> None:
        """Once the old workers are gone: close the sockets of addresses no longer
        configured (none of the current workers uses them); SIGKILL stragglers."""
        self._spawn_task(self._release_zones(handles))
        if not await all_exited(handles, self.cfg.global_.grace + 5):
            for h in handles:
                if h.pid:
                    log.error("worker %d (pid %d) did not stop in time; killing it", h.index, h.pid)
                    os.kill(h.pid, signal.SIGKILL)
            await all_exited(handles, 5)
        if self.retiring:
            return  # another reload's old workers may still use them: the last one closes
        wanted = set(slot_addresses(self.cfg))
        for addr in list(self.slots.by_addr):
            if addr not in wanted:
                self.slots.remove(addr)


async def all_exited(handles: list[WorkerHandle], timeout: float) -> bool:
    """Wait until every handle's process is reaped; False at the timeout."""
    waits = [h.exited.wait() for h in handles if h.exited is not None and h.pid]
    if not waits:
        return True
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except TimeoutError:
        return False
    return True


def why(exc: BaseException) -> str:
    """The reason in an exception, without Python's ``[Errno N]`` decoration."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)

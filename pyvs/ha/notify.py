"""Notify: run the configured command on each VRRP state change, in order.

The command line is split like a shell would (``shlex``) but not run through a shell,
so an instance name can never be interpreted as shell syntax. It gets three
arguments -- instance name, old state, new state -- and the same facts (plus the
priority) in the environment as ``PYVS_VRRP_INSTANCE``, ``PYVS_VRRP_OLD_STATE``,
``PYVS_VRRP_NEW_STATE`` and ``PYVS_VRRP_PRIORITY``. Wrap it in ``sh -c '...'`` when a
shell is wanted: ``sh -c 'echo "$1 -> $2" >> /var/log/vrrp' notify`` receives the
name as ``$0`` and the states as ``$1`` and ``$2``.

Runs are queued, one at a time, so a script always sees transitions in the order they
happened (BACKUP->MASTER is never overtaken by the MASTER->BACKUP that followed it).
A run that outlives ``timeout`` is killed and counted as failed. The VRRP machine
never waits for a notify: it has already acted when the command starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from dataclasses import dataclass

log = logging.getLogger("pyvs.ha")


@dataclass(frozen=True)
class Transition:
    instance: str
    old: str
    new: str
    priority: int


class Notifier:
    """Queues transitions and runs the notify command for each; counts runs and failures."""

    def __init__(self, command: str | None, *, timeout: float = 10.0) -> None:
        self.argv = shlex.split(command) if command else []
        self.timeout = timeout
        self.runs = 0
        self.failures = 0
        self._queue: asyncio.Queue[Transition | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def notify(self, t: Transition) -> None:
        """Log the transition and queue the command (no-op without a command)."""
        log.info("vrrp %s: %s -> %s (priority %d)", t.instance, t.old, t.new, t.priority)
        if not self.argv:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._worker())
        self._queue.put_nowait(t)

    async def _worker(self) -> None:
        while True:
            t = await self._queue.get()
            if t is None:
                return
            ok = await self._run(t)
            self.runs += 1
            if not ok:
                self.failures += 1

    async def _run(self, t: Transition) -> bool:
        env = dict(os.environ)
        env.update(
            PYVS_VRRP_INSTANCE=t.instance,
            PYVS_VRRP_OLD_STATE=t.old,
            PYVS_VRRP_NEW_STATE=t.new,
            PYVS_VRRP_PRIORITY=str(t.priority),
        )
        try:
            proc = await asyncio.create_subprocess_exec(*self.argv, t.instance, t.old, t.new, env=env)
        except OSError as exc:
            log.error("vrrp %s: notify %r cannot start: %s", t.instance, self.argv[0], exc)
            return False
        try:
            code = await asyncio.wait_for(proc.wait(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log.error("vrrp %s: notify %r killed after %.0fs", t.instance, self.argv[0], self.timeout)
            return False
        if code != 0:
            log.error("vrrp %s: notify %r exited with %d", t.instance, self.argv[0], code)
            return False
        return True

    async def close(self, *, drain: float = 5.0) -> None:
        """Let queued runs finish (up to ``drain`` seconds), then stop the worker."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def statistics(self) -> dict[str, int]:
        return {"notify_runs": self.runs, "notify_failures": self.failures}

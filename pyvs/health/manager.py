"""The health manager: runs every active check once per pyvs instance (in the
supervisor) and tells the workers what changed.

Theory of operation
-------------------
Each checked server has one check loop: a first check after a random fraction of
the interval (so 500 servers are not probed in the same millisecond), then one check
every ``interval`` (``down_interval`` while DOWN), each spread by ``jitter``. Results
feed the server's :class:`~pyvs.health.state.ServerHealth`; agent replies also set
the administrative state and the reported capacity. Outlier reports from workers go
through an :class:`~pyvs.health.outlier.Ejector` per backend.

What workers need is only "may this server take new requests, and with what weight":
whenever either changes, one message ``{"type": "server", ...}`` goes to every
worker (``broadcast``), so all workers see a state change within milliseconds of the
check that caused it. A worker that starts (or restarts) gets the whole picture
(:meth:`snapshot`). Weights sent to schedulers are scaled by ``WEIGHT_SCALE`` so that
slow start and an agent's percentage have resolution even for weight-1 servers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from pyvs.balance.slowstart import WEIGHT_SCALE, slowstart_weight
from pyvs.config.schema import Backend, Config, Server
from pyvs.health.checks import CheckResult, Target, run_check
from pyvs.health.outlier import Ejector
from pyvs.health.state import Event, ServerHealth, State, Transition

log = logging.getLogger("pyvs.health")

Broadcast = Callable[[dict[str, Any]], None]


class Entry:
    """One server as the health manager sees it."""

    def __init__(self, backend: Backend, server: Server) -> None:
        self.backend = backend
        self.server = server
        self.check = server.health or backend.health
        rise, fall = (self.check.rise, self.check.fall) if self.check else (1, 1)
        self.health = ServerHealth(rise, fall)
        self.last: CheckResult | None = None
        self.last_at = 0.0
        self.checks = 0
        self.transitions = 0
        self.ejections = 0
        self.agent_percent = 100
        self.ramp_since: float | None = None
        # What workers were last told; they start with every server eligible at full weight.
        self.sent: tuple[bool, int] = (True, server.weight * WEIGHT_SCALE)
        host, _, port = server.address.rpartition(":")
        host = host.strip("[]")
        port_n = self.check.port if self.check and self.check.port else int(port)
        # HTTP/2 to the server's own port only: a check on a port of its own (a plain
        # HTTP health endpoint beside a gRPC port, say) speaks HTTP/1.1 there.
        proto = server.proto if port_n == int(port) else "http1"
        self.target = Target(backend.name, server.name, host, port_n, proto, server.tls)

    def weight(self, now: float) -> int:
        """Effective scheduler weight: configured x scale x agent share x slow-start ramp."""
        full = self.server.weight * WEIGHT_SCALE * self.agent_percent // 100
        if full and self.agent_percent and self.server.weight:
            full = max(full, 1)
        if self.ramp_since is not None:
            return slowstart_weight(full, now, self.ramp_since, self.backend.slowstart)
        return full

    def message(self, now: float) -> dict[str, Any]:
        # DRAIN as HAProxy's: no new sessions (weight 0: no algorithm picks it), but the
        # sessions stuck to it keep coming (eligible: persistence still sends them there).
        drain = self.health.state is State.DRAIN
        return {
            "type": "server",
            "backend": self.backend.name,
            "server": self.server.name,
            "eligible": self.health.eligible or drain,
            "weight": 0 if drain else self.weight(now),
        }

    def statistics(self) -> dict[str, Any]:
        last = self.last
        return {
            "state": self.health.state.value,
            "checked": self.check is not None,
            "check_type": self.check.type if self.check else None,
            "checks": self.checks,
            "transitions": self.transitions,
            "ejections": self.ejections,
            "agent_percent": self.agent_percent,
            "effective_weight": self.sent[1],
            "slowstart": self.ramp_since is not None,
            "last_check": None if last is None else {
                "ok": last.ok,
                "detail": last.detail,
                "duration_ms": round(last.duration * 1000, 1),
                "age_s": round(time.monotonic() - self.last_at, 1),
            },
        }


class HealthManager:
    """All health state of one pyvs instance."""

    def __init__(self, cfg: Config, broadcast: Broadcast, *, seed: int | None = None) -> None:
        self.cfg = cfg
        self.broadcast = broadcast
        self.rng = random.Random(seed)
        self.entries: dict[tuple[str, str], Entry] = {}
        self.ejectors: dict[str, Ejector] = {}
        for b in cfg.backends:
            for s in b.servers:
                self.entries[(b.name, s.name)] = Entry(b, s)
            if b.passive is not None:
                self.ejectors[b.name] = Ejector(b.passive, len(b.servers))
        self._tasks: list[asyncio.Task[None]] = []
        self._ramp_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for e in self.entries.values():
            if e.check is not None:
                self._tasks.append(self._loop.create_task(self._check_loop(e)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ramp_handle is not None:
            self._ramp_handle.cancel()

    def snapshot(self) -> list[dict[str, Any]]:
        """Messages that bring a new worker up to date (only servers not in their initial state)."""
        now = time.monotonic()
        out = []
        for e in self.entries.values():
            msg = e.message(now)
            if not msg["eligible"] or msg["weight"] != e.server.weight * WEIGHT_SCALE:
                out.append(msg)
        return out

    # ---------------------------------------------------------------- checks
    async def _check_loop(self, e: Entry) -> None:
        assert e.check is not None
        check = e.check
        await asyncio.sleep(self.rng.uniform(0, check.interval))
        while True:
            result = await run_check(check, e.target, e.server.address)
            self.on_result(e, result)
            base = check.down_interval if (check.down_interval and e.health.state is State.DOWN) else check.interval
            await asyncio.sleep(base * (1 + self.rng.uniform(-check.jitter, check.jitter)))

    def on_result(self, e: Entry, result: CheckResult) -> None:
        """Apply one check result (public for tests)."""
        e.last = result
        e.last_at = time.monotonic()
        e.checks += 1
        transitions: list[Transition] = []
        t = e.health.feed_check(result.ok)
        if t is not None:
            transitions.append(t)
        report = result.agent
        if report is not None:
            if report.percent is not None:
                e.agent_percent = report.percent
            if report.admin is not None:
                t = e.health.feed({"ready": Event.READY, "drain": Event.DRAIN, "maint": Event.MAINT}[report.admin])
                if t is not None:
                    transitions.append(t)
        for t in transitions:
            self._log(e, t, result.detail)
        self._publish(e)

    # ---------------------------------------------------------------- passive
    def on_outlier(self, backend: str, server: str, reason: str) -> None:
        """A worker saw ``consecutive_errors`` failures in a row on ``server``."""
        ej = self.ejectors.get(backend)
        e = self.entries.get((backend, server))
        if ej is None or e is None:
            return
        now = time.monotonic()
        end = ej.eject(server, now)
        if end is None:
            log.info("server %s/%s: not ejected (%s): ejection limit reached or already ejected",
                     backend, server, reason)
            return
        e.ejections += 1
        t = e.health.feed(Event.EJECT)
        if t is not None:
            self._log(e, t, f"outlier: {reason}; ejected for {end - now:.0f}s")
        self._publish(e)
        assert self._loop is not None
        self._loop.call_later(end - now + 0.001, self._expire, backend)

    def _expire(self, backend: str) -> None:
        ej = self.ejectors[backend]
        for server in ej.expire(time.monotonic()):
            e = self.entries[(backend, server)]
            t = e.health.feed(Event.UNEJECT)
            if t is not None:
                self._log(e, t, "ejection time over")
            self._publish(e)

    # ---------------------------------------------------------------- operator
    def set_admin(self, backend: str, server: str, admin: str) -> State:
        """Operator action: ``ready``, ``drain`` or ``maint``."""
        e = self.entries[(backend, server)]
        t = e.health.feed({"ready": Event.READY, "drain": Event.DRAIN, "maint": Event.MAINT}[admin])
        if t is not None:
            self._log(e, t, f"operator: {admin}")
        self._publish(e)
        return e.health.state

    # ---------------------------------------------------------------- output
    def _log(self, e: Entry, t: Transition, detail: str) -> None:
        e.transitions += 1
        log.warning("server %s/%s is %s (was %s): %s: %s", e.backend.name, e.server.name, t.new.value,
                    t.old.value, t.event.value, detail)
        if t.new is State.UP and e.backend.slowstart > 0:
            e.ramp_since = time.monotonic()
            self._schedule_ramp()
        elif t.new is not State.UP:
            e.ramp_since = None

    def _publish(self, e: Entry) -> None:
        msg = e.message(time.monotonic())
        key = (msg["eligible"], msg["weight"])
        if key != e.sent:
            e.sent = key
            self.broadcast(msg)

    def _schedule_ramp(self) -> None:
        if self._ramp_handle is not None or self._loop is None:
            return
        steps = [e.backend.slowstart / 20 for e in self.entries.values() if e.ramp_since is not None]
        if steps:
            self._ramp_handle = self._loop.call_later(max(0.05, min(steps)), self._ramp_tick)

    def _ramp_tick(self) -> None:
        self._ramp_handle = None
        now = time.monotonic()
        for e in self.entries.values():
            if e.ramp_since is not None:
                if now - e.ramp_since >= e.backend.slowstart:
                    e.ramp_since = None
                self._publish(e)
        self._schedule_ramp()

    def statistics(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (b, s), e in self.entries.items():
            out.setdefault(b, {})[s] = e.statistics()
        return out

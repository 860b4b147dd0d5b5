"""Tracking: interfaces, scripts, backends and pyvs's own data path move the priority.

Theory of operation
-------------------
Each tracked object is a :class:`Tracked` with a weight and an ``ok`` flag. The
rule is keepalived's (so configs carry over): weight 0 puts the instance in FAULT
while the object fails; a negative weight is added to the priority while it fails; a
positive weight is added while it succeeds. :func:`combine` turns the set into
``(fault, delta)`` for :meth:`pyvs.ha.state.VrrpMachine.set_tracking`; it and
:class:`Hysteresis` (``rise`` successes / ``fall`` failures in a row before the flag
flips) are pure and tested as data.

A backend is up while at least one of its servers is eligible by pyvs's own health
checks (in the supervisor, which runs them); when the backend has no active check, or
VRRP runs alone (``pyvs vrrp``), while one of its servers accepts a TCP connection.
The data path is up while the listener answers
an HTTP request with any status line: a worker whose loop is stuck still completes the
TCP handshake in the kernel, so a bare connect would not notice. The instance's own
interface is always tracked with weight 0, as in keepalived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyvs.config.schema import Config, parse_address
from pyvs.config.vrrp_schema import VrrpInstance
from pyvs.ha.netlink import LinkInfo

log = logging.getLogger("pyvs.ha")

BackendHealth = Callable[[str], "bool | None"]
"""Whether a backend has a server up, from pyvs's health checks; None: not checked, probe."""


@dataclass
class Tracked:
    """One tracked object: what it is, its weight and whether it currently succeeds."""

    kind: str
    name: str
    weight: int
    ok: bool = True

    def contribution(self) -> int:
        if self.weight > 0 and self.ok:
            return self.weight
        if self.weight < 0 and not self.ok:
            return self.weight
        return 0

    def status(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "weight": self.weight, "ok": self.ok}


def combine(items: Sequence[Tracked]) -> tuple[bool, int]:
    """(fault, priority delta) of a set of tracked objects (keepalived's weight rule)."""
    fault = any(t.weight == 0 and not t.ok for t in items)
    return fault, sum(t.contribution() for t in items)


@dataclass
class Hysteresis:
    """``rise`` successes (``fall`` failures) in a row before the state flips."""

    rise: int
    fall: int
    ok: bool = True
    _run: int = field(default=0, repr=False)

    def feed(self, success: bool) -> bool:
        """Record one result; True if the state changed."""
        if success == self.ok:
            self._run = 0
            return False
        self._run += 1
        if self._run >= (self.rise if success else self.fall):
            self.ok, self._run = success, 0
            return True
        return False


# --------------------------------------------------------------------- probes


async def run_script(command: str, timeout: float) -> bool:
    """Run ``command`` (no shell); success is exit status 0 within ``timeout``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError as exc:
        log.warning("track script %r cannot start: %s", command, exc)
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False


async def tcp_connects(addresses: Sequence[tuple[str, int]], timeout: float) -> bool:
    """True if any of the addresses accepts a TCP connection within ``timeout``."""

    async def one(host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    results = await asyncio.gather(*(one(h, p) for h, p in addresses))
    return any(results)


async def http_answers(host: str, port: int, timeout: float) -> bool:
    """True if an HTTP server at host:port answers ``GET /`` with a status line in time."""

    async def exchange() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: pyvs-vrrp-track\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
            return line.startswith(b"HTTP/1.")
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError):
        return False


def _local(host: str) -> str:
    """A wildcard bind is probed on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


# ------------------------------------------------------------------- tracking


class Tracking:
    """The tracked objects of one instance and the tasks that probe them."""

    def __init__(
        self,
        inst: VrrpInstance,
        cfg: Config | None,
        on_change: Callable[[], None],
        health: BackendHealth | None = None,
    ) -> None:
        self.inst = inst
        self.on_change = on_change
        t = inst.track
        self.own = Tracked("interface", inst.interface, 0)
        self.interfaces = [Tracked("interface", x.name, x.weight) for x in t.interfaces if x.name != inst.interface]
        for x in t.interfaces:
            if x.name == inst.interface:  # an explicit weight for the own interface replaces the implicit 0
                self.own.weight = x.weight
        self.items: list[Tracked] = [self.own, *self.interfaces]
        self._probes: list[tuple[Tracked, Hysteresis, float, Callable[[], Awaitable[bool]]]] = []
        for s in t.scripts:
            item = Tracked("script", s.command, s.weight)
            self._add(item, Hysteresis(s.rise, s.fall), s.interval, _bind_script(s.command, s.timeout))
        backends = {b.name: b for b in cfg.backends} if cfg is not None else {}
        for b in t.backends:
            if b.name not in backends:
                raise ValueError(f"vrrp instance {inst.name!r}: no backend named {b.name!r}")
            addrs = [parse_address(s.address) for s in backends[b.name].servers]
            self._add(Tracked("backend", b.name, b.weight), Hysteresis(t.rise, t.fall), t.interval,
                      _bind_backend(b.name, health, addrs, t.timeout))
        listeners = {x.name: x for x in cfg.listeners} if cfg is not None else {}
        for lt in t.listeners:
            if lt.name not in listeners:
                raise ValueError(f"vrrp instance {inst.name!r}: no listener named {lt.name!r}")
            host, port = parse_address(listeners[lt.name].bind[0])
            self._add(Tracked("listener", lt.name, lt.weight), Hysteresis(t.rise, t.fall), t.interval,
                      _bind_http(_local(host), port, t.timeout))
        self._tasks: list[asyncio.Task[None]] = []

    def _add(self, item: Tracked, hyst: Hysteresis, interval: float, probe: Callable[[], Awaitable[bool]]) -> None:
        self.items.append(item)
        self._probes.append((item, hyst, interval, probe))

    @property
    def interface_names(self) -> set[str]:
        return {self.own.name, *(i.name for i in self.interfaces)}

    def result(self) -> tuple[bool, int]:
        return combine(self.items)

    def links_changed(self, infos: dict[str, LinkInfo | None]) -> None:
        """Feed a link-state snapshot (interfaces react at once: no hysteresis)."""
        changed = False
        for item in (self.own, *self.interfaces):
            if item.name not in infos:
                continue
            info = infos[item.name]
            ok = info is not None and info.up
            if ok != item.ok:
                log.info("vrrp %s: interface %s is %s", self.inst.name, item.name, "up" if ok else "down")
                item.ok, changed = ok, True
        if changed:
            self.on_change()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for probe in self._probes:
            self._tasks.append(loop.create_task(self._loop(*probe)))

    async def _loop(
        self, item: Tracked, hyst: Hysteresis, interval: float, probe: Callable[[], Awaitable[bool]]
    ) -> None:
        while True:
            try:
                success = await probe()
            except Exception:
                log.exception("vrrp %s: %s %s probe failed", self.inst.name, item.kind, item.name)
                success = False
            if hyst.feed(success):
                item.ok = hyst.ok
                log.info("vrrp %s: %s %s is %s", self.inst.name, item.kind, item.name, "ok" if item.ok else "failing")
                self.on_change()
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def status(self) -> list[dict[str, object]]:
        return [t.status() for t in self.items]


def _bind_script(command: str, timeout: float) -> Callable[[], Awaitable[bool]]:
    return lambda: run_script(command, timeout)


def _bind_backend(
    name: str, health: BackendHealth | None, addrs: list[tuple[str, int]], timeout: float
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        verdict = health(name) if health is not None else None
        if verdict is not None:
            return verdict
        return await tcp_connects(addrs, timeout)

    return probe


def _bind_http(host: str, port: int, timeout: float) -> Callable[[], Awaitable[bool]]:
    return lambda: http_answers(host, port, timeout)


def health_source(manager: Any) -> BackendHealth:
    """Read "has a server up" from a :class:`pyvs.health.manager.HealthManager`.

    None for a backend without active checks: every server is UP there by definition,
    which says nothing, so the tracker probes by itself.
    """

    def up(name: str) -> bool | None:
        entries = [e for (backend, _), e in manager.entries.items() if backend == name]
        if not any(e.check is not None for e in entries):
            return None
        return any(e.health.eligible for e in entries)

    return up

"""The asyncio glue: sockets, timers, VIPs, tracking and notify around each machine.

Theory of operation
-------------------
One :class:`InstanceRunner` per ``vrrp:`` entry. Its socket's reader validates each
datagram (:func:`pyvs.ha.packet.validate`) and feeds the survivors to the
:class:`~pyvs.ha.state.VrrpMachine`; one ``loop.call_at`` handle follows the machine's
``next_deadline()``; the machine's outputs are carried out here and nowhere else:
adverts go out at once, VIP changes go to the netlink thread in order (one lock, so
a release queued behind a take runs after it), and gratuitous ARPs / neighbour
adverts follow each take, the first at once, then ``garp_repeat - 1`` more.

:class:`VrrpRunner` owns what the instances share (the netlink thread and the link
watcher) and is what the supervisor and ``pyvs vrrp`` start; its ``cleanup()``
resigns every master (priority 0) and removes the VIPs, so a clean stop hands over
in skew time instead of master-down time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from typing import Any

from pyvs.config.schema import Config
from pyvs.config.vrrp_schema import VrrpInstance
from pyvs.ha.io import Announcer, Datagram, VrrpSocket
from pyvs.ha.netlink import LinkInfo, LinkWatcher, Netlink
from pyvs.ha.notify import Notifier, Transition
from pyvs.ha.packet import (
    GROUP_V4,
    GROUP_V6,
    Advert,
    Drop,
    Expect,
    IPAddress,
    PacketError,
    encode,
    password_data,
    validate,
)
from pyvs.ha.state import (
    Params,
    PeerAdvert,
    ReleaseVips,
    SendAdvert,
    State,
    StateChanged,
    TakeVips,
    VrrpMachine,
)
from pyvs.ha.tracking import BackendHealth, Tracking, health_source

log = logging.getLogger("pyvs.ha")

COUNTERS: tuple[str, ...] = (
    "adverts_sent",
    "adverts_received",
    "resigns_sent",
    "resigns_received",
    "send_errors",
    "became_master",
    "left_master",
    "transitions",
    "vip_mismatch",
    "vip_errors",
    "garp_sent",
    *(f"drop_{d.value}" for d in Drop),
)
"""Counter names of an instance, declared once (status, metrics and tests read these)."""

VipInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class HaError(RuntimeError):
    """VRRP cannot start (missing interface, no source address, no permission)."""


class InstanceRunner:
    """One VRRP instance at work; see the module docstring."""

    def __init__(
        self, inst: VrrpInstance, cfg: Config | None, netlink: Netlink, health: BackendHealth | None = None
    ) -> None:
        self.inst = inst
        self.netlink = netlink
        self.vips: list[VipInterface] = [ipaddress.ip_interface(v) for v in inst.virtual_ips]
        self.peers = [ipaddress.ip_address(p) for p in inst.unicast_peers]
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.notifier = Notifier(inst.notify)
        self.tracking = Tracking(inst, cfg, self._tracking_changed, health)
        self.machine: VrrpMachine | None = None
        self.link: LinkInfo | None = None
        self.primary: IPAddress | None = None
        self.sock: VrrpSocket | None = None
        self.announcer: Announcer | None = None
        self.since = time.time()
        self._timer: asyncio.TimerHandle | None = None
        self._vip_lock = asyncio.Lock()
        self._vip_tasks: set[asyncio.Task[None]] = set()
        self._garp: asyncio.Task[None] | None = None
        self._logged: dict[str, float] = {}
        self._auth = password_data(inst.auth_pass)
        self._expect: Expect | None = None

    # ------------------------------------------------------------------ start
    async def start(self, info: LinkInfo | None) -> None:
        inst = self.inst
        if info is None:
            raise HaError(f"vrrp {inst.name}: interface {inst.interface!r} does not exist")
        self.link = info
        self.primary = self._source(info)
        fam = inst.family
        self.machine = VrrpMachine(
            Params(
                vrid=inst.vrid,
                priority=inst.priority,
                advert_interval=inst.advert_interval,
                primary=self.primary,
                version=inst.version,
                preempt=inst.preempts,
                preempt_delay=inst.preempt_delay,
            )
        )
        self._expect = Expect(
            version=inst.version,
            vrid=inst.vrid,
            family=fam,
            interval=round(inst.advert_interval * 100),
            addresses=frozenset(v.ip for v in self.vips),
            auth_type=self._auth[0],
            auth_data=self._auth[1],
            peers=frozenset(self.peers),
            own=frozenset({self.primary}),
        )
        try:
            self.sock = VrrpSocket(fam, info.name, info.index, multicast=not self.peers)
            self.announcer = Announcer(fam, info.name, info.index)
        except PermissionError:
            raise HaError(f"vrrp {inst.name}: raw sockets need root or CAP_NET_RAW") from None
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable)
        fault, delta = self.tracking.result()
        now = loop.time()
        self.machine.set_tracking(fault=fault, delta=delta, now=now)
        log.info(
            "vrrp %s: VRRPv%d vrid %d on %s from %s, priority %d, advert %.2fs, %s",
            inst.name, inst.version, inst.vrid, info.name, self.primary, inst.priority, inst.advert_interval,
            "unicast to " + ", ".join(map(str, self.peers)) if self.peers else "multicast",
        )
        self._apply(self.machine.start(now))
        self.tracking.start()

    def _source(self, info: LinkInfo) -> IPAddress:
        """The address adverts are sent from (and the tie-breaker): configured, or the interface's."""
        if self.inst.source_address is not None:
            return ipaddress.ip_address(self.inst.source_address)
        vip_ips = {v.ip for v in self.vips}
        if self.inst.family == 4:
            for a in info.ipv4:
                if a.ip not in vip_ips:
                    return a.ip
            raise HaError(f"vrrp {self.inst.name}: {info.name} has no IPv4 address to send adverts from")
        ll = info.link_local
        if ll is None:
            raise HaError(f"vrrp {self.inst.name}: {info.name} has no IPv6 link-local address (RFC 5798 needs one)")
        return ll

    # ----------------------------------------------------------------- inputs
    def _readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                dg = self.sock.recv()
            except PacketError as exc:
                self._drop(exc)
                continue
            except OSError as exc:
                self._warn("recv", f"receive failed: {exc}")
                return
            if dg is None:
                return
            self._datagram(dg)

    def _datagram(self, dg: Datagram) -> None:
        assert self.machine is not None and self._expect is not None
        try:
            rx = validate(dg.payload, dg.source, dg.destination, dg.ttl, self._expect)
        except PacketError as exc:
            self._drop(exc)
            return
        self.counters["adverts_received"] += 1
        if rx.advert.priority == 0:
            self.counters["resigns_received"] += 1
        if not rx.addresses_match:
            self.counters["vip_mismatch"] += 1
            self._warn("mismatch", f"address owner {rx.source} advertises other virtual IPs than ours")
        peer = PeerAdvert(rx.source, rx.advert.priority, rx.advert.interval / 100)
        self._apply(self.machine.receive(peer, asyncio.get_running_loop().time()))

    def _drop(self, exc: PacketError) -> None:
        self.counters[f"drop_{exc.reason.value}"] += 1
        if exc.reason is Drop.ADDRESSES:
            self.counters["vip_mismatch"] += 1
        if exc.reason not in (Drop.VRID, Drop.OWN):
            self._warn(exc.reason.value, f"dropped an advert: {exc}")

    def _warn(self, key: str, message: str) -> None:
        """Log a receive problem at most once per 10 s per kind (a misconfigured peer sends 1/s)."""
        now = time.monotonic()
        if now - self._logged.get(key, -1e9) >= 10:
            self._logged[key] = now
            log.warning("vrrp %s: %s", self.inst.name, message)

    def _on_timer(self, deadline: float) -> None:
        assert self.machine is not None
        self._timer = None
        self._apply(self.machine.on_timer(max(asyncio.get_running_loop().time(), deadline)))

    def _tracking_changed(self) -> None:
        if self.machine is None:
            return
        fault, delta = self.tracking.result()
        self._apply(self.machine.set_tracking(fault=fault, delta=delta, now=asyncio.get_running_loop().time()))

    # ---------------------------------------------------------------- outputs
    def _apply(self, outputs: list[Any]) -> None:
        for out in outputs:
            if isinstance(out, SendAdvert):
                self._send(out.priority)
            elif isinstance(out, TakeVips):
                self._spawn(self._take())
            elif isinstance(out, ReleaseVips):
                if self._garp is not None:
                    self._garp.cancel()
                self._spawn(self._release())
            elif isinstance(out, StateChanged):
                self._changed(out)
        self._rearm()

    def _rearm(self) -> None:
        assert self.machine is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.machine.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)

    def _send(self, priority: int) -> None:
        assert self.sock is not None and self.primary is not None
        inst = self.inst
        advert = Advert(
            version=inst.version,
            vrid=inst.vrid,
            priority=priority,
            interval=round(inst.advert_interval * 100),
            addresses=tuple(v.ip for v in self.vips),
            auth_type=self._auth[0],
            auth_data=self._auth[1],
        )
        group: IPAddress = GROUP_V4 if inst.family == 4 else GROUP_V6
        for dst in self.peers or [group]:
            try:
                self.sock.send(encode(advert, self.primary, dst), self.primary, dst)
            except OSError as exc:
                self.counters["send_errors"] += 1
                self._warn("send", f"cannot send an advert to {dst}: {exc}")
                continue
            self.counters["adverts_sent"] += 1
            if priority == 0:
                self.counters["resigns_sent"] += 1

    def _changed(self, ch: StateChanged) -> None:
        self.since = time.time()
        self.counters["transitions"] += 1
        if ch.new is State.MASTER:
            self.counters["became_master"] += 1
        if ch.old is State.MASTER:
            self.counters["left_master"] += 1
        self.notifier.notify(Transition(self.inst.name, ch.old.value, ch.new.value, ch.priority))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._vip_tasks.add(task)
        task.add_done_callback(self._vip_tasks.discard)

    async def _take(self) -> None:
        assert self.link is not None
        async with self._vip_lock:
            for vip in self.vips:
                try:
                    await self.netlink.add_address(self.link.index, vip)
                except OSError as exc:
                    self.counters["vip_errors"] += 1
                    log.error("vrrp %s: cannot add %s to %s: %s", self.inst.name, vip, self.link.name, exc)
            if self.machine is not None and self.machine.state is State.MASTER:
                if self._garp is not None:
                    self._garp.cancel()
                self._garp = asyncio.get_running_loop().create_task(self._announce())

    async def _release(self) -> None:
        assert self.link is not None
        async with self._vip_lock:
            for vip in self.vips:
                try:
                    if await self.netlink.remove_address(self.link.index, vip):
                        log.info("vrrp %s: removed %s from %s", self.inst.name, vip, self.link.name)
                except OSError as exc:
                    self.counters["vip_errors"] += 1
                    log.error("vrrp %s: cannot remove %s from %s: %s", self.inst.name, vip, self.link.name, exc)

    async def _announce(self) -> None:
        """Gratuitous ARPs / unsolicited NAs: at once, then every ``garp_interval``."""
        assert self.announcer is not None and self.link is not None
        for i in range(self.inst.garp_repeat):
            if i:
                await asyncio.sleep(self.inst.garp_interval)
            try:
                self.counters["garp_sent"] += self.announcer.announce(self.link.mac, self.vips)
            except OSError as exc:
                self._warn("garp", f"cannot announce the virtual IPs: {exc}")

    # ------------------------------------------------------------------- stop
    async def stop(self) -> None:
        """Resign if master, remove the VIPs, close everything."""
        await self.tracking.close()
        if self.machine is not None:
            self._apply(self.machine.stop(asyncio.get_running_loop().time()))
        if self._garp is not None:
            self._garp.cancel()
        if self._vip_tasks:
            await asyncio.gather(*self._vip_tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        for s in (self.sock, self.announcer):
            if s is not None:
                if s is self.sock:
                    with contextlib.suppress(Exception):
                        loop.remove_reader(s.fileno())
                s.close()
        self.sock = self.announcer = None
        await self.notifier.close()

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        m = self.machine
        inst = self.inst
        return {
            "name": inst.name,
            "interface": inst.interface,
            "vrid": inst.vrid,
            "version": inst.version,
            "state": m.state.value if m else State.INIT.value,
            "since": round(time.time() - self.since, 1),
            "priority": m.priority if m else inst.priority,
            "configured_priority": inst.priority,
            "advert_interval": inst.advert_interval,
            "master_down_interval": round(m.master_down_interval, 3) if m else None,
            "preempt": inst.preempts,
            "master": str(m.master) if m and m.master else None,
            "master_priority": m.master_priority if m else None,
            "source_address": str(self.primary) if self.primary else None,
            "unicast_peers": list(inst.unicast_peers),
            "virtual_ips": list(inst.virtual_ips),
            "tracking": self.tracking.status(),
            "counters": {**self.counters, **self.notifier.statistics()},
        }


class VrrpRunner:
    """All VRRP instances of a config; ``start()`` then ``cleanup()``."""

    def __init__(self, cfg: Config, health: Any = None) -> None:
        self.cfg = cfg
        self.netlink = Netlink()
        self.links = LinkWatcher(self.netlink)
        source = health_source(health) if health is not None else None
        self.instances = [InstanceRunner(inst, cfg, self.netlink, source) for inst in cfg.vrrp]

    async def start(self) -> None:
        for r in self.instances:
            self.links.subscribe(r.tracking.interface_names, r.tracking.links_changed)
        self.links.start()
        infos = await self.links.refresh_now()
        started: list[InstanceRunner] = []
        try:
            for r in self.instances:
                await r.start(infos.get(r.inst.interface))
                started.append(r)
        except BaseException:
            for r in started:
                await r.stop()
            self.links.close()
            await self.netlink.close()
            raise

    async def cleanup(self) -> None:
        for r in self.instances:
            await r.stop()
        self.links.close()
        await self.netlink.close()

    def status(self) -> list[dict[str, Any]]:
        return [r.status() for r in self.instances]

    def metrics(self) -> str:
        """Prometheus text exposition of the instances (state one-hot, priority, counters)."""
        lines = [
            "# HELP pyvs_vrrp_state 1 for the current state of each VRRP instance.",
            "# TYPE pyvs_vrrp_state gauge",
        ]
        for r in self.instances:
            st = r.status()
            for s in State:
                lines.append(f'pyvs_vrrp_state{{instance="{st["name"]}",state="{s.value}"}} '
                             f'{int(st["state"] == s.value)}')
        lines += ["# HELP pyvs_vrrp_priority Effective priority.", "# TYPE pyvs_vrrp_priority gauge"]
        lines += [f'pyvs_vrrp_priority{{instance="{r.inst.name}"}} {r.status()["priority"]}' for r in self.instances]
        for name in (*COUNTERS, "notify_runs", "notify_failures"):
            lines.append(f"# TYPE pyvs_vrrp_{name}_total counter")
            for r in self.instances:
                value = r.status()["counters"][name]
                lines.append(f'pyvs_vrrp_{name}_total{{instance="{r.inst.name}"}} {value}')
        return "\n".join(lines) + "\n"


async def start_vrrp(cfg: Config, health: Any = None) -> VrrpRunner:
    """Start every instance of ``cfg.vrrp``; the result's ``cleanup()`` stops them.

    ``health`` is the supervisor's health manager, whose verdicts backend tracking
    prefers over its own probes.
    """
    runner = VrrpRunner(cfg, health)
    await runner.start()
    return runner


def run_standalone(cfg: Config) -> int:
    """``pyvs vrrp``: only the VRRP instances, until SIGTERM/SIGINT (then resign)."""
    import uvloop

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            runner = await start_vrrp(cfg)
        except (HaError, OSError) as exc:
            log.error("%s", exc)
            return 1
        await stop.wait()
        log.info("stopping: resigning %d instance(s)", len(runner.instances))
        await runner.cleanup()
        return 0

    return uvloop.run(main())

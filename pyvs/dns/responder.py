"""The authoritative responder of ``mode: dns`` listeners, UDP and TCP, in each worker.

Theory of operation
-------------------
Where it runs: in the workers, like the UDP proxy (:mod:`pyvs.l4.udp`). Each worker
reads its slot's SO_REUSEPORT UDP socket of every dns address (the kernel spreads
resolvers over the workers) and accepts DNS over TCP on its slot's listening socket,
both inherited from the supervisor (:mod:`pyvs.runtime.sockets`), so DNS scales with the workers,
survives a worker restart, and a reload swaps zones with the worker generation
without a second code path. The health picture is the one the workers already keep
(the supervisor's ``server`` messages applied to each :class:`BackendRuntime`): the
worker calls :meth:`DnsRuntime.changed` after applying one, and the answers are
rebuilt once per burst of messages (``call_soon``), so a failed server leaves the
answers within milliseconds of the check that saw it.

Per query (:meth:`DnsService.answer`): :func:`pyvs.dns.wire.scan` reads the question
of an ordinary query, the precomputed entry is looked up by (name in lower case,
type) and, for a region-dependent name, the resolver's region; one variant is
picked (rotation or weighted random) and :func:`pyvs.dns.wire.finish` patches id,
flags and question into it. Anything else -- EDNS Client Subnet, other opcodes,
classes, malformed queries -- takes the slow path through dnspython's parser and
builds the response from the same precomputed RRsets.

UDP answers larger than 512 bytes (the client's EDNS payload size, capped by
``udp_payload``, with EDNS) are truncated (TC, question only) and the client retries
over TCP, where the whole answer is sent (RFC 7766 framing: two-byte length).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import TYPE_CHECKING, cast

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass

from pyvs.config.dns_schema import DnsOptions, GslbSite
from pyvs.config.schema import Listener
from pyvs.dns.answers import Answers
from pyvs.dns.gslb import RemoteSites
from pyvs.dns.policy import HealthView, ServerView, server_view, site_is_up
from pyvs.dns.regions import RegionMap
from pyvs.dns.stats import ANSWER_SLOTS, answer_slot
from pyvs.dns.wire import finish, scan
from pyvs.dns.zone import Zones

if TYPE_CHECKING:
    from pyvs.runtime.worker import WorkerRuntime
    from pyvs.upstream.server import BackendRuntime

log = logging.getLogger("pyvs.dns")

BATCH = 64  # datagrams per wakeup before yielding
MAX_TCP_MESSAGE = 65535
MAX_UDP_QUERY = 4096  # a query is a few dozen bytes; reading 64 KiB per datagram costs an allocation


class WorkerHealth:
    """The :class:`~pyvs.dns.policy.HealthView` of a worker: its backends' servers as the
    schedulers see them (eligible, effective weight) and the remote sites' poll state."""

    def __init__(self, backends: dict[str, BackendRuntime], remote: RemoteSites | None = None) -> None:
        self.backends = backends
        self.remote = remote

    def servers(self, pool: str) -> list[ServerView]:
        out = []
        for s in self.backends[pool].servers:
            t = s.target
            v = server_view(s.name, s.host, t.weight, t.eligible, t.backup)
            if v is not None:
                out.append(v)
        return out

    def site_up(self, site: GslbSite) -> bool:
        if site.status_url is not None:
            return self.remote.is_up(site) if self.remote is not None else True
        return site_is_up(site, self)


class DnsService:
    """One dns listener's zones, answers and counters (shared by its UDP and TCP sockets)."""

    def __init__(self, cfg: Listener, backends: dict[str, BackendRuntime], *, seed: int = 0,
                 loop: asyncio.AbstractEventLoop | None = None, view: HealthView | None = None) -> None:
        self.cfg = cfg
        self.options = cfg.dns or DnsOptions()
        self.loop = loop
        self.remote = RemoteSites(self.options.sites, self.changed, seed=seed)
        # ``view`` replaces the worker's health picture (tests drive it by hand).
        self.health: HealthView = view or WorkerHealth(backends, self.remote)
        self.answers = Answers(Zones(cfg.zones), self.options, self.health)
        self.regions = RegionMap(self.options.regions, self.answers.regions)
        self.rng = random.Random(seed)
        self.payload = self.options.udp_payload
        self.queries = 0
        self.slow = 0
        self.truncated = 0
        self.malformed = 0
        # Counters of pyvs/dns/stats.py: one list slot per (rcode, qtype), filled per answer.
        self.tcp_queries = 0
        self.dropped = 0
        self.answered = [0] * ANSWER_SLOTS
        self._pending = False

    def changed(self) -> None:
        """Health, a weight or a site changed: rebuild the answers once this burst is over."""
        if self._pending:
            return
        if self.loop is None:
            self.answers.rebuild()
            return
        self._pending = True
        self.loop.call_soon(self._rebuild)

    def _rebuild(self) -> None:
        self._pending = False
        self.answers.rebuild()

    def answer(self, data: bytes, source: str, tcp: bool) -> bytes | None:
        """The response to one query from ``source`` (an IP), or None to stay silent."""
        self.queries += 1
        q = scan(data)
        if q is None:
            return self._slow(data, source, tcp)
        qname, qtype, edns, payload, _ = q
        entry = self.answers.table.get((qname.lower(), qtype)) or self.answers.lookup(qname.lower(), qtype)
        per = entry.per_region
        v = per[0] if len(per) == 1 else entry.for_region(self.regions.region_of(source))
        wires = v.wires
        wire = wires[v.pick(self.rng) if len(wires) > 1 else 0][edns]
        self.answered[v.stat] += 1  # (rcode, qtype) slot precomputed with the answer
        if tcp:
            limit = MAX_TCP_MESSAGE
        elif edns:
            limit = payload if payload < self.payload else self.payload
        else:
            limit = 512
        if len(wire) > limit:
            self.truncated += 1
        return finish(wire, data, q, limit)

    def _slow(self, data: bytes, source: str, tcp: bool) -> bytes | None:
        """The general path: dnspython parses the query (see module doc)."""
        self.slow += 1
        try:
            query = dns.message.from_wire(data)
        except dns.message.BadEDNS:
            self.dropped += 1
            return None
        except dns.exception.DNSException:
            self.malformed += 1
            err = _formerr(data)
            if err is None:
                self.dropped += 1
            else:
                self.answered[answer_slot(dns.rcode.FORMERR, None)] += 1
            return err
        if query.flags & dns.flags.QR:
            self.dropped += 1
            return None
        resp = dns.message.make_response(query, our_payload=self.payload)
        resp.flags &= ~dns.flags.RA
        if query.edns > 0:
            resp.use_edns(0, payload=self.payload)
            resp.set_rcode(dns.rcode.BADVERS)
            return self._sent(resp, resp.to_wire())
        if query.opcode() != dns.opcode.QUERY:
            resp.set_rcode(dns.rcode.NOTIMP)
            return self._sent(resp, resp.to_wire())
        if len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
            return self._sent(resp, resp.to_wire())
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            resp.set_rcode(dns.rcode.REFUSED)
            return self._sent(resp, resp.to_wire())
        ecs = next((o for o in query.options if isinstance(o, dns.edns.ECSOption)), None)
        if ecs is not None:
            region = self.regions.region_of_subnet(ecs.address, ecs.srclen)
        else:
            region = self.regions.region_of(source)
        entry = self.answers.lookup(question.name.canonicalize().to_wire() or b"\x00", question.rdtype)
        v = entry.for_region(region)
        answer, authority = v.sections[v.pick(self.rng)]
        if v.aa:
            resp.flags |= dns.flags.AA
        resp.set_rcode(dns.rcode.Rcode(v.rcode))
        resp.answer.extend(answer)
        resp.authority.extend(authority)
        if ecs is not None:
            # RFC 7871 7.2.1: echo the option; the scope says how far the answer holds.
            scope = ecs.srclen if v.regional else 0
            resp.use_edns(0, payload=self.payload, options=[dns.edns.ECSOption(ecs.address, ecs.srclen, scope)])
        if tcp:
            limit = MAX_TCP_MESSAGE
        elif query.edns >= 0:
            limit = max(512, min(query.payload, self.payload))
        else:
            limit = 512
        try:
            return self._sent(resp, resp.to_wire(max_size=limit, want_shuffle=False))
        except dns.exception.TooBig:
            self.truncated += 1
            resp.answer.clear()
            resp.authority.clear()
            resp.flags |= dns.flags.TC
            return self._sent(resp, resp.to_wire())

    def _sent(self, resp: dns.message.Message, wire: bytes) -> bytes:
        """Count a slow-path answer by rcode and question type (pyvs/dns/stats.py)."""
        q = resp.question
        self.answered[answer_slot(resp.rcode(), q[0].rdtype if len(q) == 1 else None)] += 1
        return wire


def _formerr(data: bytes) -> bytes | None:
    """FORMERR with the query's id for a query too broken to parse; nothing for a response
    or less than a header (answering those would make pyvs a reflector)."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    return data[:2] + bytes([0x80 | (data[2] & 0x79), 0x01]) + b"\x00" * 8


class UdpEndpoint:
    """One dns bind address for UDP in one worker."""

    def __init__(self, service: DnsService, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.sock = sock
        self.loop = loop
        loop.add_reader(sock.fileno(), self._on_datagrams)

    def _on_datagrams(self) -> None:
        sock = self.sock
        if sock.fileno() < 0:
            return  # closed while a call_soon was pending
        answer = self.service.answer
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(MAX_UDP_QUERY)
            except BlockingIOError:
                return
            except OSError:
                continue
            out = answer(data, addr[0], False)
            if out is not None:
                try:
                    sock.sendto(out, addr)
                except OSError:
                    pass  # socket buffer full: a resolver retries, as after any lost datagram
        self.loop.call_soon(self._on_datagrams)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class TcpConnection(asyncio.Protocol):
    """DNS over TCP (RFC 7766): length-prefixed messages, answered in order; closed when idle."""

    def __init__(self, service: DnsService, idle: float, conns: set[TcpConnection]) -> None:
        self.service = service
        self.idle = idle
        self.conns = conns
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.idle, self.close)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + n:
                break
            self.service.tcp_queries += 1  # (UDP is queries - tcp_queries: its path pays nothing)
            resp = self.service.answer(buf[2:2 + n], self.peer, True)
            buf = buf[2 + n:]
            if resp is not None:
                out.append(len(resp).to_bytes(2, "big") + resp)
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        self._arm()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.conns.discard(self)


class DnsRuntime:
    """Every dns listener of one worker."""

    def __init__(self, worker: WorkerRuntime) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.services: list[DnsService] = []
        self.udp: list[UdpEndpoint] = []
        self.tcp: list[asyncio.Server] = []
        self.conns: set[TcpConnection] = set()

    @classmethod
    async def start(cls, worker: WorkerRuntime) -> DnsRuntime | None:
        """Build and bind the dns listeners of the config; None when there are none."""
        listeners = [lc for lc in worker.cfg.listeners if lc.mode == "dns"]
        if not listeners:
            return None
        rt = cls(worker)
        for lc in listeners:
            svc = DnsService(lc, worker.backends, seed=worker.index, loop=rt.loop)
            rt.services.append(svc)
            idle = svc.options.tcp_idle
            for addr in lc.bind:
                try:
                    rt.udp.append(UdpEndpoint(svc, worker.udp_socket(addr), rt.loop))
                    sock = worker.listen_socket(addr)
                    rt.tcp.append(await rt.loop.create_server(
                        lambda svc=svc, idle=idle: TcpConnection(svc, idle, rt.conns),  # type: ignore[misc]
                        sock=sock, backlog=lc.backlog))
                except OSError as exc:
                    rt.close()
                    raise OSError(exc.errno, f"listener {lc.name!r} cannot bind {addr}: {exc.strerror}") from None
            svc.remote.start(rt.loop)
        return rt

    def changed(self) -> None:
        """A server's health or weight changed (called by the worker after applying it)."""
        for svc in self.services:
            svc.changed()

    def close(self) -> None:
        """Stop answering: a resolver retries another address or the next worker."""
        for u in self.udp:
            u.close()
        self.udp.clear()
        for s in self.tcp:
            s.close()
        for c in list(self.conns):
            c.close()
        for svc in self.services:
            self.loop.create_task(svc.remote.stop())

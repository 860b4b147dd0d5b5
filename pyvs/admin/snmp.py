"""Read-only SNMP for pyvs: an AgentX subagent under the system's net-snmp ``snmpd``.

Theory of operation
-------------------
``pyvs ctl snmp-agent --agentx unix:/var/agentx/master`` is a small process of its own
(as keepalived's SNMP support is a subagent of ``snmpd``): it reads ``/status`` from the
admin API once per ``--interval`` -- the numbers ``/metrics`` is made of -- turns it into
the objects of ``PYVS-MIB`` (:func:`objects`, shipped as ``pyvs/admin/mibs/PYVS-MIB.txt``)
and answers the master agent's requests from that snapshot (:mod:`pyvs.admin.agentx`).
``snmpd`` does SNMP itself: versions, communities or USM users, access control.

Keeping it out of the supervisor means the data path and the admin endpoint never wait
on ``snmpd``, and a subagent that cannot reach its master only logs and retries. When
the master restarts, or closes the session, the subagent reconnects every second; when
pyvs cannot be reached, it keeps serving its last snapshot, with ``pyvsUp`` at 2.

The subtree is ``enterprises.32473.1``: 32473 is the enterprise number that RFC 5612
reserves for documentation and examples. A site that wants its own can move the tree
with ``--root`` (and edit the MIB file's ``pyvs`` OID the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pyvs.admin.agentx import (
    HEADER,
    NOT_WRITABLE,
    OID,
    AgentXError,
    MibView,
    PduType,
    Value,
    VarType,
    close_pdu,
    open_pdu,
    parse_header,
    parse_request,
    parse_response,
    register_pdu,
    response_pdu,
)

log = logging.getLogger("pyvs.snmp")

ROOT: OID = (1, 3, 6, 1, 4, 1, 32473, 1)
SERVER_STATES = {"UP": 1, "DOWN": 2, "DRAIN": 3, "MAINT": 4}
VRRP_STATES = {"INIT": 1, "BACKUP": 2, "MASTER": 3, "FAULT": 4}
# pyvsGlobal scalars: (sub-id, totals key, type)
TOTALS = (
    (6, "client_connections"), (7, "requests"), (8, "responses_1xx"), (9, "responses_2xx"),
    (10, "responses_3xx"), (11, "responses_4xx"), (12, "responses_5xx"), (13, "retries"),
    (14, "redispatches"), (15, "bad_requests"), (16, "backend_connections_opened"),
    (17, "backend_connections_reused"),
)
# pyvsServerEntry columns after name (2) and address (3): (sub-id, server key, type)
SERVER_COUNTERS = (
    (7, "requests", VarType.COUNTER64), (8, "responses_5xx", VarType.COUNTER64),
    (9, "connect_failures", VarType.COUNTER64), (10, "connections_opened", VarType.COUNTER64),
    (11, "connections_reused", VarType.COUNTER64), (6, "active", VarType.GAUGE32),
)


def objects(status: dict[str, Any] | None, root: OID = ROOT) -> dict[OID, tuple[VarType, Value]]:
    """The PYVS-MIB objects of one ``/status`` document (``None``: pyvs not reachable)."""
    out: dict[OID, tuple[VarType, Value]] = {}
    g = (*root, 1)
    out[(*g, 1, 0)] = (VarType.INTEGER, 1 if status is not None else 2)  # pyvsUp
    if status is None:
        return out
    out[(*g, 2, 0)] = (VarType.OCTET_STRING, str(status.get("version", "")))
    out[(*g, 3, 0)] = (VarType.TIMETICKS, int(float(status.get("uptime", 0)) * 100))
    out[(*g, 4, 0)] = (VarType.GAUGE32, sum(1 for w in status.get("workers", []) if w.get("ready")))
    out[(*g, 5, 0)] = (VarType.COUNTER32, int(status.get("reloads", 0)))
    totals = status.get("totals", {})
    for sub, key in TOTALS:
        out[(*g, sub, 0)] = (VarType.COUNTER64, int(totals.get(key) or 0))
    bt = (*root, 2, 1)  # pyvsBackendEntry
    st = (*root, 3, 1)  # pyvsServerEntry
    for bi, b in enumerate(status.get("backends", []), start=1):
        servers = b.get("servers", [])
        out[(*bt, 2, bi)] = (VarType.OCTET_STRING, str(b["name"]))
        out[(*bt, 3, bi)] = (VarType.OCTET_STRING, str(b.get("balance", "")))
        out[(*bt, 4, bi)] = (VarType.GAUGE32, sum(1 for s in servers if s.get("state", "UP") == "UP"))
        out[(*bt, 5, bi)] = (VarType.GAUGE32, len(servers))
        out[(*bt, 6, bi)] = (VarType.COUNTER64, sum(int(s.get("requests", 0)) for s in servers))
        out[(*bt, 7, bi)] = (VarType.COUNTER64, int(b.get("no_server", 0)))
        for si, s in enumerate(servers, start=1):
            idx = (bi, si)
            out[(*st, 2, *idx)] = (VarType.OCTET_STRING, str(s["name"]))
            out[(*st, 3, *idx)] = (VarType.OCTET_STRING, str(s.get("address", "")))
            out[(*st, 4, *idx)] = (VarType.INTEGER, SERVER_STATES.get(str(s.get("state", "UP")), 1))
            out[(*st, 5, *idx)] = (VarType.GAUGE32, int(s.get("weight", 0)))
            for sub, key, vtype in SERVER_COUNTERS:
                out[(*st, sub, *idx)] = (vtype, int(s.get(key, 0)))
            last = (s.get("health") or {}).get("last_check")
            out[(*st, 12, *idx)] = (VarType.INTEGER, 3 if not last else 1 if last.get("ok") else 2)
            out[(*st, 13, *idx)] = (VarType.GAUGE32, int(round(float(last.get("duration_ms", 0))) if last else 0))
    vt = (*root, 4, 1)  # pyvsVrrpEntry
    for vi, v in enumerate(status.get("vrrp") or [], start=1):
        out[(*vt, 2, vi)] = (VarType.OCTET_STRING, str(v.get("name", "")))
        out[(*vt, 3, vi)] = (VarType.INTEGER, VRRP_STATES.get(str(v.get("state", "INIT")), 1))
        out[(*vt, 4, vi)] = (VarType.GAUGE32, int(v.get("priority") or 0))
        out[(*vt, 5, vi)] = (VarType.GAUGE32, int(v.get("vrid") or 0))
    return out


def parse_agentx_address(addr: str) -> tuple[str, str | tuple[str, int]]:
    """``unix:/path`` or ``/path`` -> ("unix", path); ``tcp:host:port`` or ``host:port`` -> ("tcp", ...)."""
    if addr.startswith("unix:"):
        return "unix", addr[5:]
    if addr.startswith("/"):
        return "unix", addr
    rest = addr.removeprefix("tcp:")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--agentx: expected unix:/path or tcp:host:port, got {addr!r}")
    return "tcp", (host.strip("[]"), int(port))


class Subagent:
    """One AgentX session to the master, answering from the latest snapshot."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]], agentx: str, *,
                 interval: float = 1.0, root: OID = ROOT) -> None:
        self.fetch = fetch
        self.kind, self.where = parse_agentx_address(agentx)
        self.interval = interval
        self.root = root
        self.view = MibView(objects(None, root))
        self.started = time.monotonic()
        self.sessions = 0  # sessions opened (a reconnect opens a new one)

    async def refresh(self) -> None:
        try:
            status = await self.fetch()
        except Exception as exc:  # anything the API client raises: serve "down", keep going
            log.warning("snmp: cannot read pyvs status: %s", exc)
            self.view = MibView(objects(None, self.root))
            return
        self.view = MibView(objects(status, self.root))

    async def poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; reconnect to the master whenever the session ends."""
        await self.refresh()
        poller = asyncio.create_task(self.poll(stop))
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                except (OSError, AgentXError, asyncio.IncompleteReadError) as exc:
                    log.warning("snmp: AgentX session with %s ended: %s; reconnecting", self.where, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            poller.cancel()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.kind == "unix":
            assert isinstance(self.where, str)
            return await asyncio.open_unix_connection(self.where)
        assert isinstance(self.where, tuple)
        return await asyncio.open_connection(*self.where)

    async def _read(self, reader: asyncio.StreamReader) -> tuple[Any, bytes]:
        head = await reader.readexactly(HEADER)
        h = parse_header(head)
        return h, await reader.readexactly(h.length)

    async def _session(self, stop: asyncio.Event) -> None:
        reader, writer = await self._connect()
        try:
            writer.write(open_pdu(1, self.root, "pyvs subagent"))
            h, payload = await self._read(reader)
            if parse_response(h, payload) != 0:
                raise AgentXError("the master refused the session")
            session = h.session
            writer.write(register_pdu(session, 2, self.root))
            h, payload = await self._read(reader)
            error = parse_response(h, payload)
            if error != 0:
                raise AgentXError(f"the master refused to register {'.'.join(map(str, self.root))} (error {error})")
            self.sessions += 1
            log.info("snmp: serving %s through the AgentX master at %s", ".".join(map(str, self.root)), self.where)
            reading = asyncio.ensure_future(self._serve(reader, writer))
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reading in done:
                reading.result()  # raises what ended the session
                return
            reading.cancel()
            writer.write(close_pdu(session, 3))
            with contextlib.suppress(OSError):
                await writer.drain()
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            h, payload = await self._read(reader)
            uptime = int((time.monotonic() - self.started) * 100)
            if h.type in (PduType.GET, PduType.GETNEXT, PduType.GETBULK):
                view = self.view  # one snapshot per request
                writer.write(response_pdu(h, view.answer(parse_request(h, payload)), uptime=uptime))
            elif h.type == PduType.TESTSET:
                writer.write(response_pdu(h, [], error=NOT_WRITABLE, index=1, uptime=uptime))
            elif h.type in (PduType.COMMITSET, PduType.UNDOSET, PduType.CLEANUPSET):
                writer.write(response_pdu(h, [], uptime=uptime))
            elif h.type == PduType.CLOSE:
                raise AgentXError("the master closed the session")
            # Response (to nothing we sent now), Ping, Notify...: nothing to answer
            await writer.drain()


"""Session persistence inside a worker: which server a request sticks to.

Theory of operation
-------------------
A backend with ``persistence`` gets one of these objects as ``BackendRuntime.persist``;
the exchange (pyvs/l7/exchange.py) calls it in two places, and only for such backends (a backend
without persistence pays one ``is None`` test per hook):

``pick(fe, head, exclude, now)``
    instead of ``backend.pick``. On the first attempt of a request it extracts the
    session key (client network, header, query parameter) or the persistence cookie
    -- stripping it from the forwarded head where the mode says so -- and keeps what
    it found in ``fe.stick`` (one :class:`Sticky` per exchange, reused), so
    retries see the same key. A live entry whose server is eligible wins; an entry
    whose server is down, draining, in maintenance or already tried this request is
    *redispatched* (``on_failure: redispatch``: balance afresh, re-stick, count it)
    or fails (``on_failure: fail``: no server, so the backend's sorry answer).
``on_response(fe, rh, server)``
    adds or edits ``Set-Cookie`` (cookie types) or learns a key the server issued in a
    response header (``stick store-response``). Editing the head switches a response
    that would have been forwarded byte for byte to a rebuilt head (``raw_ok = False``).

Stick tables (source, header, param): under a supervisor, the generation's shared
table decides (:mod:`pyvs.persist.shared_table`: first claim wins, no window between
workers); without one (tests, a bare WorkerRuntime) a local cache of the supervisor's
tables, whose lookups never wait. What a worker learns is queued and sent to the supervisor once
per event-loop iteration; what others learned arrives through :meth:`on_sync`
(see :mod:`pyvs.persist.hub` for the staleness bound). A live entry that keeps being
used is re-announced once per quarter of ``timeout``, so every worker and node keeps
it alive, at one message per entry per refresh rather than per request.

Weight 0 (an agent's ``0%``) keeps sessions on their server, as in HAProxy: only new
sessions avoid it. Health states DOWN, DRAIN and MAINT make a server ineligible, and
its sessions move.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pyvs.persist.cookie import CookieCodec, CookieSpec, CookieValue, private_cache, server_id
from pyvs.persist.shared_table import SharedStickTable
from pyvs.persist.store import LEARN, MOVE
from pyvs.persist.table import StickTable, header_pattern, header_value, query_param, source_key, value_key

if TYPE_CHECKING:
    from pyvs.balance.base import PickContext
    from pyvs.config.persist_schema import Persistence as PersistenceConfig
    from pyvs.http.h1 import RequestHead, ResponseHead
    from pyvs.upstream.server import BackendRuntime, ServerState

SWEEP_INTERVAL = 1.0
SWEEP_LIMIT = 5000
# A head forwarded byte for byte may still hold "Connection: keep-alive" (the one
# hop-by-hop field a raw response may carry); a rebuilt head must not.
_CONNECTION_LINE = re.compile(rb"\r\n(?i:connection):[^\r\n]*(?=\r\n)")


class Exchange(Protocol):
    """What persistence reads of an L7 exchange (pyvs.l7.exchange.Exchange): persist/
    names no proxy class."""

    stick: Sticky | None
    client_ip: bytes
    loop: asyncio.AbstractEventLoop
    worker: Any  # its stats count redispatches

    def pick_context(self, exclude: frozenset[int], now: float) -> PickContext: ...


class Sticky:
    """Persistence state of the exchange in progress on one client connection."""

    __slots__ = ("cookie", "key", "out", "wall")

    def __init__(self) -> None:
        self.key: str | None = None  # table key of the request (table types)
        self.cookie: CookieValue | None = None  # the request's valid cookie (cookie type)
        self.out: bytes | None = None  # Set-Cookie line the response must carry
        self.wall = 0.0  # wall-clock time of the request (dated cookies)


class Persistence:
    """Common part: sticking, redispatching, counting."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        self.cfg = cfg
        self.backend = backend
        self.name = backend.name
        self.redispatch = cfg.on_failure == "redispatch"
        self.stuck = False  # the last pick followed the request's session (SessionPicker.stuck)
        self.hits = 0
        self.misses = 0
        self.redispatches = 0
        self.failures = 0

    def bind(self, loop: asyncio.AbstractEventLoop, send: Callable[[dict[str, Any]], None]) -> None:
        """Attach to the worker's loop and supervisor channel (table types use them)."""

    def on_sync(self, entries: list[Any], now: float) -> None:
        """Entries from the supervisor (table types)."""

    def pick(self, fe: Exchange, head: RequestHead, exclude: frozenset[int], now: float) -> ServerState | None:
        raise NotImplementedError

    def on_response(self, fe: Exchange, rh: ResponseHead, server: ServerState) -> None:
        """Hook on the response head (default: nothing)."""

    def _stuck(self, fe: Exchange, head: RequestHead, exclude: frozenset[int], now: float,
               sticky: ServerState | None) -> tuple[ServerState | None, bool]:
        """``(server, moved)``: the sticky server when it can take the request, else a
        fresh pick (``moved`` when that replaces a sticky server), or None (``fail``)."""
        if sticky is not None:
            if sticky.target.eligible and sticky.index not in exclude:
                self.hits += 1
                self.stuck = True
                return sticky, False
            if not self.redispatch:
                self.failures += 1
                return None, False
            server = self.backend.pick(fe.pick_context(exclude, now))
            if server is None or server is sticky:  # nowhere else to go (a retry on the only server)
                return server, False
            self.redispatches += 1
            fe.worker.stats.redispatches += 1
            return server, True
        self.misses += 1
        return self.backend.pick(fe.pick_context(exclude, now)), False

    def statistics(self) -> dict[str, Any]:
        return {
            "type": self.cfg.type,
            "hits": self.hits,
            "misses": self.misses,
            "redispatches": self.redispatches,
            "failures": self.failures,
        }


def _sticky(fe: Exchange) -> Sticky:
    st = fe.stick
    if st is None:
        st = fe.stick = Sticky()
    return st


class CookiePersistence(Persistence):
    """``type: cookie``: the server id travels in a cookie (no shared state)."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        super().__init__(cfg, backend)
        assert cfg.name is not None
        self.codec = CookieCodec(CookieSpec(
            name=cfg.name, mode=cfg.mode, indirect=cfg.indirect, nocache=cfg.nocache, httponly=cfg.httponly,
            secure=cfg.secure, samesite=cfg.samesite, domain=cfg.domain, maxidle=cfg.maxidle, maxlife=cfg.maxlife,
        ))
        self.insert = cfg.mode == "insert"
        self.nocache = cfg.nocache
        self.by_sid = {server_id(backend.name, s.name): s for s in backend.servers}
        self.sid_of = {s.index: sid for sid, s in self.by_sid.items()}
        self.wall_clock: Callable[[], float] = time.time  # cookie dates are wall-clock (tests replace it)

    def pick(self, fe: Exchange, head: RequestHead, exclude: frozenset[int], now: float) -> ServerState | None:
        st = _sticky(fe)
        codec = self.codec
        if not exclude:  # first attempt: read (and maybe strip) the cookie once
            value, head.block = codec.from_request(head.block)
            st.wall = self.wall_clock() if codec.dated else 0.0
            st.cookie = codec.check(value, st.wall) if value is not None else None
        st.out = None
        v = st.cookie
        sticky = self.by_sid.get(v.sid) if v is not None else None
        server, _ = self._stuck(fe, head, exclude, now, sticky)
        if server is None or server.index < 0 or not self.insert:
            return server
        if server is not sticky:
            st.out = codec.set_cookie(self.sid_of[server.index], st.wall)
        elif v is not None and codec.needs_refresh(v, st.wall):
            st.out = codec.set_cookie(v.sid, st.wall, v.first)
        return server

    def on_response(self, fe: Exchange, rh: ResponseHead, server: ServerState) -> None:
        st = fe.stick
        if st is None or server.index < 0:
            return
        block = rh.block
        out = st.out
        own = self.codec.server_cookies(block)
        if out is None and not own:
            return
        if rh.raw_ok:
            block = _CONNECTION_LINE.sub(b"", block)
        if own:
            block = self.codec.edit_response(block, self.sid_of[server.index])
        if out is not None:
            block += out
        if self.nocache and (out is not None or not self.insert):
            block = private_cache(block)
        rh.block = block
        rh.raw_ok = False


class TablePersistence(Persistence):
    """Stick-table types: ``source``, ``header``, ``param``."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        super().__init__(cfg, backend)
        self.table = StickTable(cfg.timeout, cfg.max_entries)
        # Under a supervisor the table that decides is the generation's shared one
        # (pyvs/persist/shared_table.py); the local one then stays empty.
        state = backend.shared_state
        info = state.sticks.get(backend.name) if state is not None else None
        self.shared = SharedStickTable(state.words, info, cfg.timeout) if state is not None and info else None
        self.announced: dict[str, float] = {}  # shared: when a live entry was last told to the hub
        self.refresh = cfg.timeout / 4
        self.outbox: list[list[str]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.send: Callable[[dict[str, Any]], None] | None = None
        self.nokey = 0
        self.learned_from_responses = 0
        resp = cfg.response_header or (cfg.name if cfg.type == "header" else None)
        self.resp_pattern = header_pattern(resp) if resp else None

    def key(self, fe: Exchange, head: RequestHead) -> str | None:
        raise NotImplementedError

    # ---------------------------------------------------------------- request path
    def pick(self, fe: Exchange, head: RequestHead, exclude: frozenset[int], now: float) -> ServerState | None:
        st = _sticky(fe)
        if not exclude:
            st.key = self.key(fe, head)
        key = st.key
        if key is None:
            self.nokey += 1
            return self.backend.pick(fe.pick_context(exclude, now))
        if self.shared is not None:
            return self._pick_shared(fe, head, exclude, now, key, self.shared)
        e = self.table.hit(key, now)
        sticky = self.backend.by_name.get(e.value) if e is not None else None
        server, moved = self._stuck(fe, head, exclude, now, sticky)
        if server is None or server.index < 0:
            return server
        if server is sticky:
            assert e is not None
            if now - e.synced >= self.refresh:  # keep it alive everywhere, once per refresh
                e.synced = now
                self._queue(key, server.name, LEARN)
            return server
        e = self.table.put(key, server.name, now)
        e.synced = now
        self._queue(key, server.name, MOVE if moved else LEARN)
        return server

    def _pick_shared(self, fe: Exchange, head: RequestHead, exclude: frozenset[int], now: float, key: str,
                     table: SharedStickTable) -> ServerState | None:
        """``pick`` on the shared table: the first worker to claim a key decides."""
        servers = self.backend.servers
        idx = table.lookup(key, now)
        sticky = servers[idx] if 0 <= idx < len(servers) else None
        server, moved = self._stuck(fe, head, exclude, now, sticky)
        if server is None or server.index < 0:
            return server
        if server is sticky:
            if now - self.announced.get(key, -1e18) >= self.refresh:  # keep it alive in the hub and Redis
                if len(self.announced) >= 65536:
                    self.announced.clear()
                self.announced[key] = now
                self._queue(key, server.name, LEARN)
            return server
        held = table.claim(key, server.index, now, sticky.index if moved and sticky is not None else -1)
        if held != server.index and 0 <= held < len(servers):
            other = servers[held]
            if other.target.eligible and other.index not in exclude:
                self.hits += 1  # another worker stuck this session a moment ago: follow it
                self.stuck = True
                return other
            table.put(key, server.index, now)  # what it holds cannot take the request
        self.announced[key] = now
        self._queue(key, server.name, MOVE if moved else LEARN)
        return server

    def on_response(self, fe: Exchange, rh: ResponseHead, server: ServerState) -> None:
        pattern = self.resp_pattern
        if pattern is None or server.index < 0:
            return
        value = header_value(rh.block, pattern)
        key = value_key(value) if value else None
        if key is None:
            return
        # The server issued this token: it is authoritative for it (overwrites).
        now = fe.loop.time()
        if self.shared is not None:
            if self.shared.lookup(key, now) != server.index:
                self.learned_from_responses += 1
                self.shared.put(key, server.index, now)
                self._queue(key, server.name, MOVE)
            return
        e = self.table.get(key, now)
        if e is not None and e.value == server.name:
            return
        self.learned_from_responses += 1
        self.table.put(key, server.name, now).synced = now
        self._queue(key, server.name, MOVE)

    # ---------------------------------------------------------------- sync
    def bind(self, loop: asyncio.AbstractEventLoop, send: Callable[[dict[str, Any]], None]) -> None:
        self.loop = loop
        self.send = send
        loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _queue(self, key: str, server: str, op: str) -> None:
        if not self.outbox and self.loop is not None:
            self.loop.call_soon(self.flush)
        self.outbox.append([key, server, op])

    def flush(self) -> None:
        """Send what this loop iteration learned to the supervisor (one message)."""
        out, self.outbox = self.outbox, []
        if out and self.send is not None:
            self.send({"type": "stick", "backend": self.name, "entries": out})

    def on_sync(self, entries: list[Any], now: float) -> None:
        shared = self.shared
        if shared is not None:
            by_name = self.backend.by_name
            for key, server, ttl in entries:
                srv = by_name.get(str(server))
                if ttl > 0 and srv is not None and shared.lookup(str(key), now) != srv.index:
                    shared.put(str(key), srv.index, now, float(ttl))
            return
        table = self.table
        for key, server, ttl in entries:
            if ttl > 0:
                table.put(str(key), str(server), now, float(ttl)).synced = now

    def _sweep(self) -> None:
        assert self.loop is not None
        if self.shared is None:  # the supervisor sweeps the shared table
            self.table.expire(self.loop.time(), SWEEP_LIMIT)
        self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def statistics(self) -> dict[str, Any]:
        entries = len(self.shared) if self.shared is not None else len(self.table)
        return {**super().statistics(), "entries": entries, "shared": self.shared is not None, "no_key": self.nokey,
                "learned_from_responses": self.learned_from_responses}


class SourcePersistence(TablePersistence):
    """``type: source``: the client's address (or its /N network)."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        super().__init__(cfg, backend)
        self.v4 = cfg.ipv4_prefix
        self.v6 = cfg.ipv6_prefix
        self._keys: dict[bytes, str | None] = {}

    def key(self, fe: Exchange, head: RequestHead) -> str | None:
        ip = fe.client_ip
        k = self._keys.get(ip, "")
        if k == "":
            if len(self._keys) >= 65536:
                self._keys.clear()  # a cache of computed prefixes, not state
            k = self._keys[ip] = source_key(ip.decode(), self.v4, self.v6)
        return k


class HeaderPersistence(TablePersistence):
    """``type: header``: a request header's value (e.g. an API token), hashed."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        super().__init__(cfg, backend)
        assert cfg.name is not None
        self.pattern = header_pattern(cfg.name)

    def key(self, fe: Exchange, head: RequestHead) -> str | None:
        value = header_value(head.block, self.pattern)
        return value_key(value) if value else None


class ParamPersistence(TablePersistence):
    """``type: param``: a query parameter's value, hashed."""

    def __init__(self, cfg: PersistenceConfig, backend: BackendRuntime) -> None:
        super().__init__(cfg, backend)
        assert cfg.name is not None
        self.param = cfg.name.encode()

    def key(self, fe: Exchange, head: RequestHead) -> str | None:
        value = query_param(head.target, self.param)
        return value_key(value) if value else None


_TYPES: dict[str, type[Persistence]] = {
    "cookie": CookiePersistence,
    "source": SourcePersistence,
    "header": HeaderPersistence,
    "param": ParamPersistence,
}


def build(cfg: PersistenceConfig, backend: BackendRuntime) -> Persistence:
    """The worker-side persistence object of ``backend``."""
    return _TYPES[cfg.type](cfg, backend)

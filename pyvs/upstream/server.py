"""Runtime state of backends and servers inside one worker.

A :class:`BackendRuntime` is built once per worker from the immutable config; it
owns the scheduler and, per server, the pool of idle keep-alive connections.
Counters are plain integers (no locks, no syscalls) that the worker ships to the
supervisor every ``stats_interval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pyvs.balance.base import PickContext, Scheduler, Target, create
from pyvs.balance.hashing import HashScheduler
from pyvs.balance.slowstart import WEIGHT_SCALE
from pyvs.config.schema import Backend, parse_address
from pyvs.http.responses import sorry_response
from pyvs.shared.state import B_RR, S_ACTIVE, S_ERRORS, SERVER_FIXED, SharedState
from pyvs.shared.zone import Words

if TYPE_CHECKING:
    from pyvs.upstream.connection import UpstreamConn


class SessionPicker(Protocol):
    """What the upstream layer knows of a backend's session persistence (built by
    the worker from pyvs.persist; the exchange asks it instead of ``pick``)."""

    #: set by ``pick``: True when the server it returned is the request's session's own
    #: (a sticky hit), so a full server makes the request wait for it (pyvs/l7/queue.py)
    stuck: bool

    def pick(self, ex: Any, head: Any, exclude: frozenset[int], now: float) -> ServerState | None: ...
    def on_response(self, ex: Any, rh: Any, server: ServerState) -> None: ...
    def statistics(self) -> dict[str, Any]: ...
    def bind(self, loop: Any, send: Callable[[dict[str, Any]], None]) -> None: ...
    def on_sync(self, entries: list[Any], now: float) -> None: ...


class ServerState:
    """One server: address, scheduler target, idle pool and counters."""

    __slots__ = (
        "active",
        "backend",
        "col",
        "conn_failures",
        "consecutive_errors",
        "host",
        "host_header",
        "idle",
        "index",
        "index_set",
        "name",
        "opened",
        "passive_word",
        "passive_words",
        "port",
        "requests",
        "responses_5xx",
        "reused",
        "slot",
        "target",
        "weight",
        "words",
    )

    def __init__(self, backend: BackendRuntime, index: int, name: str, address: str, weight: int,
                 backup: bool, maxconn: int) -> None:
        self.backend = backend
        self.index = index
        self.index_set = frozenset({index})  # for retry exclusion without building a set per request
        self.name = name
        self.host, self.port = parse_address(address)
        # Used as Host for HTTP/1.0 requests that carry none.
        self.host_header = address.encode()
        # Schedulers get weights scaled by WEIGHT_SCALE (see pyvs.balance.slowstart) so
        # that slow start and agent percentages have resolution for weight-1 servers.
        self.target = Target(index=index, name=name, weight=weight * WEIGHT_SCALE, backup=backup, maxconn=maxconn)
        self.weight = weight
        self.idle: list[UpstreamConn] = []
        self.requests = 0
        self.opened = 0
        self.reused = 0
        self.conn_failures = 0
        self.responses_5xx = 0
        self.active = 0
        self.consecutive_errors = 0  # passive health: failures in a row on live traffic
        # The instance-wide count in the shared zone (pyvs/shared/state.py), when attached:
        # ``slot`` holds every worker's total, ``col`` this worker's share of it.
        self.words: Words | None = None
        self.slot = 0
        self.col = 0
        # The shared count of failures in a row (passive health), when the backend has it.
        self.passive_words: Words | None = None
        self.passive_word = 0

    def passive_failed(self, threshold: int) -> bool:
        """One more live-traffic failure in a row; True when this one reaches
        ``threshold`` (then the count starts again). Shared by every worker when the
        backend has passive health, so N failures spread over workers are N."""
        w = self.passive_words
        if w is None:
            self.consecutive_errors += 1
            if self.consecutive_errors < threshold:
                return False
            self.consecutive_errors = 0
            return True
        n = w.add(self.passive_word, 1)
        # At or past the threshold: the one worker whose reset succeeds reports (a count
        # pushed past it by a racing failure, or left by a killed worker, still resets).
        return n >= threshold and w.cas(self.passive_word, n, 0)

    def passive_ok(self) -> None:
        """An answer without error: the failures in a row start again from 0."""
        w = self.passive_words
        if w is not None and w.get(self.passive_word):
            w.set(self.passive_word, 0)

    def take(self) -> None:
        """One more request (or session) in flight to this server, here and instance-wide.
        The share is written before the total (see pyvs/shared/state.py for why)."""
        self.active += 1
        w = self.words
        if w is not None:
            w.set(self.col, self.active)
            w.add(self.slot, 1)

    def try_take(self) -> bool:
        """``take`` if the server is below its ``maxconn`` instance-wide (always, without
        one); False, with nothing taken, when it is full. Exact across workers: the
        add is atomic and undone when it went over."""
        maxconn = self.target.maxconn
        if not maxconn:
            self.take()
            return True
        w = self.words
        if w is None:
            if self.active >= maxconn:
                return False
            self.active += 1
            return True
        self.active += 1
        w.set(self.col, self.active)
        if w.add(self.slot, 1) <= maxconn:
            return True
        w.add(self.slot, -1)
        self.active -= 1
        w.set(self.col, self.active)
        return False

    def give(self) -> None:
        """One request (or session) to this server is over."""
        self.active -= 1
        w = self.words
        if w is not None:
            w.add(self.slot, -1)
            w.set(self.col, self.active)

    def shared_active(self) -> int:
        """In flight to this server from every worker (this worker's own count when
        nothing is shared)."""
        w = self.words
        return max(0, w.get(self.slot)) if w is not None else self.active

    def take_idle(self, now: float, max_idle_age: float) -> UpstreamConn | None:
        """Most recently used idle connection, or None. ``max_idle_age`` > 0 restricts
        the choice to connections idle less than that (used for non-idempotent requests)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if max_idle_age and now - conn.idle_since > max_idle_age:
                idle.append(conn)
                return None
            return conn
        return None

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": f"{self.host}:{self.port}",
            "weight": self.weight,
            "effective_weight": self.target.weight,
            "backup": self.target.backup,
            "eligible": self.target.eligible,
            "requests": self.requests,
            "active": self.active,
            "connections_opened": self.opened,
            "connections_reused": self.reused,
            "connect_failures": self.conn_failures,
            "responses_5xx": self.responses_5xx,
            "idle_pooled": len(self.idle),
        }


class BackendRuntime:
    """A backend inside one worker: servers, scheduler, timeouts."""

    def __init__(self, cfg: Backend, *, seed: int | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.servers = [
            ServerState(self, i, s.name, s.address, s.weight, s.backup, s.maxconn)
            for i, s in enumerate(cfg.servers)
        ]
        self.by_index = {s.target.index: s for s in self.servers}
        self.by_name = {s.name: s for s in self.servers}
        sorry = cfg.sorry
        # A sorry server is outside the scheduler: used only when pick() finds nobody.
        self.sorry_server = ServerState(self, -1, "(sorry)", sorry.server, 1, True, 0) if sorry.server else None
        self.sorry_response = sorry_response(sorry.status, sorry.body, sorry.content_type)
        passive = cfg.passive
        self.passive_threshold = passive.consecutive_errors if passive else 0
        self.passive_kinds = frozenset(passive.errors) if passive else frozenset()
        self.scheduler: Scheduler = create(
            cfg.balance, [s.target for s in self.servers], seed=seed, hash_type=cfg.hash_type, **cfg.balance_options
        )
        self.connect_timeout = cfg.timeouts.connect
        self.server_timeout = cfg.timeouts.server
        self.total_timeout = cfg.timeouts.total
        self.retries = cfg.retries
        self.max_idle = cfg.pool.max_idle
        self.idle_timeout = cfg.pool.idle_timeout
        self.no_server = 0
        # One shared context for schedulers that read nothing from the request.
        self._empty_ctx = PickContext()
        self.needs_context = isinstance(self.scheduler, HashScheduler)
        # Latency-aware algorithms want each exchange's latency and the time at pick.
        self.observes = type(self.scheduler).observed is not Scheduler.observed
        # Session persistence (pyvs/persist), attached by the worker: the exchange
        # asks it instead of pick() when set.
        self.persist: SessionPicker | None = None
        self.simple = False
        # Instance-wide counts for schedulers that read them (leastconn, p2c...): set by
        # attach_shared; pick() copies them into the targets first.
        self.shared_counts: Words | None = None
        self.shared_state: SharedState | None = None
        # The HTTP queue (pyvs/l7/queue.py) when a server has a maxconn: set by the worker.
        self.queue: Any = None
        self.limited = any(s.maxconn for s in cfg.servers)
        self.attach_persistence(None)

    def attach_shared(self, state: SharedState) -> None:
        """Count in the generation's shared zone, and draw round robin from its
        instance-wide position (pyvs/shared/state.py)."""
        self.shared_state = state
        words = state.words
        if self.name in state.counted:  # something reads the counts: keep them instance-wide
            for s in self.servers:
                slot = state.servers[(self.name, s.name)]
                s.words = words
                s.slot = slot + S_ACTIVE
                s.col = slot + SERVER_FIXED + state.owner
        if self.passive_threshold:  # outlier detection counts every worker's failures
            for s in self.servers:
                slot = state.servers[(self.name, s.name)]
                s.passive_words = words
                s.passive_word = slot + S_ERRORS
        rr = state.backends[self.name] + B_RR
        self.scheduler.share_sequence(lambda: words.add(rr, 1) - 1)
        sched = self.scheduler
        if sched.reads_outstanding or (isinstance(sched, HashScheduler) and sched.options.get("balance_factor")):
            self.shared_counts = words
        self.attach_persistence(self.persist)

    def attach_persistence(self, persist: SessionPicker | None) -> None:
        """Set (or clear) the backend's persistence, and what follows from it."""
        self.persist = persist
        # Nothing about the request or the exchange feeds the choice of server: the
        # exchange may pick with the shared empty context on its short path.
        # (The short path also counts outstanding requests itself, as Scheduler.taken does.)
        self.simple = persist is None and not self.needs_context and not self.observes \
            and type(self.scheduler).taken is Scheduler.taken and self.shared_counts is None and not self.limited

    def pick(self, ctx: PickContext | None = None) -> ServerState | None:
        """Choose a server. The caller digests the request into ``ctx`` only when the
        algorithm reads one (``needs_context``: hashing); others share an empty one."""
        words = self.shared_counts
        if words is not None:  # the instance's counts, not this worker's
            for s in self.servers:
                s.target.outstanding = max(0, words.get(s.slot))
        target = self.scheduler.pick(ctx if ctx is not None else self._empty_ctx)
        if target is None:
            return None
        return self.by_index[target.index]

    def apply(self, eligible: bool, weight: int, server: ServerState) -> None:
        """A health or operator change from the supervisor."""
        t = server.target
        sched = self.scheduler
        if weight != t.weight:
            sched.weight_changed(t, weight)
        if eligible and not t.eligible:
            sched.server_up(t)
        elif not eligible and t.eligible:
            sched.server_down(t)
        if not eligible:
            while server.idle:
                server.idle.pop().close()

    def close_idle(self) -> None:
        for s in [*self.servers, *([self.sorry_server] if self.sorry_server else [])]:
            while s.idle:
                s.idle.pop().close()

    def statistics(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "balance": self.cfg.balance,
            "no_server": self.no_server,
            "servers": [s.statistics() for s in self.servers],
        }
        if self.persist is not None:
            out["persistence"] = self.persist.statistics()
        if self.queue is not None:
            out["queue"] = self.queue.statistics()
        return out


"""Runtime actions of the admin API: what an operator changes without editing the config.

Theory of operation
-------------------
Every action runs in the supervisor and reaches the workers through the messages they
already understand, so there is one path for a change whatever caused it:

* **enable / disable / drain / maint** set the server's *administrative* state in the
  health manager (:meth:`pyvs.health.manager.HealthManager.set_admin`), exactly as an
  agent check's ``ready`` / ``drain`` / ``maint`` reply does. The manager derives the
  displayed state (UP, DRAIN, MAINT, DOWN) and broadcasts ``{"type": "server", ...}``
  to every worker and kernel data plane. ``disable`` is HAProxy's ``disable server``:
  MAINT. DRAIN takes the server out of the balancing for new sessions only (published
  as eligible with weight 0: exchanges in flight finish, sessions stuck to it keep
  coming, as HAProxy's drain); MAINT takes it out entirely (sticky sessions move:
  docs/sessions.md). Health checks go on, and the
  state survives a reload of the config (the health state of a kept server is carried).
* **weight** is applied by swapping in a copy of the running config whose server has
  the new weight (``Supervisor.cfg`` and the health manager's entries), then publishing
  the entry: workers get the new effective weight (times the agent share and the slow
  start ramp, as always), and a worker that restarts later is forked from the swapped
  config, so it starts with it. The next reload of the config file brings the file's
  weight back.
* **add / remove a server** build a new config (the running one plus or minus the
  server), validate it in full as ``pyvs check`` would, and apply it as a reload does: a
  new worker generation on the same listening sockets, the old one drains. Nothing is
  refused or reset, health and stick tables are carried. The change lives in memory
  only: **the next reload of the config file undoes it** (each answer says so).
* **stick table clear** empties the supervisor's table and tells every worker to empty
  its copy (``{"type": "stick_clear"}``).

Every action, refused or applied, is logged (logger ``pyvs.admin``) with who asked --
the peer address and, with ``admin.token_file``, a fingerprint of the token -- and kept
in a short in-memory journal that ``GET /actions`` returns.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pyvs.config.loader import _problems
from pyvs.config.schema import Config, Server

if TYPE_CHECKING:
    from pyvs.runtime.supervisor import Supervisor

log = logging.getLogger("pyvs.admin")

JOURNAL = 200  # actions kept for GET /actions
STATE_ACTIONS = {"enable": "ready", "ready": "ready", "disable": "maint", "maint": "maint", "drain": "drain"}
RUNTIME_NOTE = "runtime change: kept until the next reload of the config file, which undoes it"
SERVER_KEYS = frozenset({"name", "address", "weight", "backup", "maxconn"})


class ActionError(Exception):
    """An action refused: ``status`` is the HTTP status, ``str()`` the reason for the operator."""

    def __init__(self, status: int, reason: str, errors: list[str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked for an action: the peer address and the token's fingerprint (if any)."""

    peer: str
    token_id: str | None = None

    def __str__(self) -> str:
        return f"{self.peer} (token {self.token_id})" if self.token_id else self.peer


class RuntimeActions:
    """The admin API's actions on one running supervisor (see the module docstring)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.journal: collections.deque[dict[str, Any]] = collections.deque(maxlen=JOURNAL)

    # ---------------------------------------------------------------- journal
    def record(self, who: Who, what: str, result: dict[str, Any] | ActionError) -> None:
        ok = not isinstance(result, ActionError)
        outcome = "done" if ok else f"refused ({result})"
        log.info("admin action by %s: %s: %s", who, what, outcome)
        self.journal.append({"at": round(time.time(), 3), "peer": who.peer, "token": who.token_id,
                             "action": what, "ok": ok, **({} if ok else {"reason": str(result)})})

    # ---------------------------------------------------------------- lookups
    def _entry(self, backend: str, server: str) -> Any:
        if not any(b.name == backend for b in self.sup.cfg.backends):
            raise ActionError(404, f"no backend named {backend!r}")
        e = self.sup.health.entries.get((backend, server))
        if e is None:
            raise ActionError(404, f"backend {backend!r} has no server named {server!r}")
        return e

    def _idle(self) -> None:
        lock = getattr(self.sup, "_reload_lock", None)
        if lock is not None and lock.locked():
            raise ActionError(409, "a reload is in progress; try again when it is over")
        if not self.sup.running or self.sup.stopping:
            raise ActionError(409, "pyvs is not running (starting or stopping)")

    # ---------------------------------------------------------------- actions
    def set_state(self, backend: str, server: str, action: str) -> dict[str, Any]:
        """enable | disable | drain | maint (``ready`` = enable)."""
        admin = STATE_ACTIONS.get(action)
        if admin is None:
            raise ActionError(400, f"unknown action {action!r}; known: {', '.join(sorted(STATE_ACTIONS))}")
        self._entry(backend, server)
        state = self.sup.health.set_admin(backend, server, admin)
        return {"ok": True, "backend": backend, "server": server, "action": action, "state": state.value}

    def set_weight(self, backend: str, server: str, weight: Any) -> dict[str, Any]:
        """Set the configured weight (0-256) until the next reload."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
            raise ActionError(400, f"weight: expected an integer from 0 to 256, got {weight!r}")
        e = self._entry(backend, server)
        self._idle()
        old = e.server.weight
        # A copy of the running config with that one value changed, not a re-validated
        # one: validation would re-read certificate files and build new TLS contexts that
        # the running workers do not serve (the weight was checked above).
        cfg = self.sup.cfg
        backends = [b.model_copy(update={"servers": [s.model_copy(update={"weight": weight}) if s.name == server
                                                     else s for s in b.servers]}) if b.name == backend else b
                    for b in cfg.backends]
        self._swap(cfg.model_copy(update={"backends": backends}))
        self.sup.health._publish(e)  # the manager's own "tell the workers if it changed"
        return {"ok": True, "backend": backend, "server": server, "weight": weight, "was": old,
                "effective_weight": e.sent[1], "note": RUNTIME_NOTE}

    async def add_server(self, backend: str, spec: Any) -> dict[str, Any]:
        """Add a server (``{name, address, weight?, backup?, maxconn?}``) until the next reload."""
        if not isinstance(spec, dict):
            raise ActionError(400, "body: expected a JSON object {name, address, weight, backup, maxconn}")
        unknown = sorted(set(spec) - SERVER_KEYS)
        if unknown:
            raise ActionError(400, f"{unknown[0]}: unknown key (known: {', '.join(sorted(SERVER_KEYS))})")
        try:
            new_server = Server.model_validate(spec)
        except ValidationError as exc:
            raise ActionError(422, "invalid server", _problems(exc)) from None
        self._entry_backend(backend)
        return await self._apply(_with_servers(self.sup.cfg, backend, lambda servers: [*servers, new_server]),
                                 f"server {backend}/{new_server.name} added")

    async def remove_server(self, backend: str, server: str) -> dict[str, Any]:
        """Remove a server until the next reload (its in-flight exchanges finish)."""
        self._entry(backend, server)
        return await self._apply(
            _with_servers(self.sup.cfg, backend, lambda servers: [s for s in servers if s.name != server]),
            f"server {backend}/{server} removed")

    def stick_show(self, backend: str, limit: int = 1000) -> dict[str, Any]:
        table = self._table(backend)
        now = time.monotonic()
        entries: list[dict[str, Any]] = []
        for key, e in table.items(now):
            if len(entries) >= limit:
                break
            entries.append({"key": key, "server": e.value, "expires_in": round(e.expires - now, 1)})
        return {"backend": backend, "size": len(table), "entries": entries, "truncated": len(table) > len(entries)}

    def stick_clear(self, backend: str) -> dict[str, Any]:
        table = self._table(backend)
        dropped = len(table)
        table.clear()
        self.sup.broadcast({"type": "stick_clear", "backend": backend})
        return {"ok": True, "backend": backend, "cleared": dropped}

    async def cache_purge(self, url: str) -> dict[str, Any]:
        """``POST /cache/purge?url=U``: drop ``U`` from the caches (``U*``: every URL
        that starts with ``U``). U is ``http://host/path?query`` or ``host/path``. The
        supervisor removes the objects from the stores the workers share (a prefix
        lists the directory: in a thread), which every worker's copies follow; the
        workers are also told, for their own copies. ``purged``: objects removed."""
        import asyncio

        from pyvs.accel import parse_purge_url
        from pyvs.accel.cache import cache_key
        from pyvs.accel.cache_files import purge_files
        from pyvs.l7.request import normalise_host

        if not any(lc.cache is not None or any(r.cache is not None for r in lc.routes)
                   or any(r.cache is not None for v in lc.vhosts for r in v.routes) for lc in self.sup.cfg.listeners):
            raise ActionError(409, "no cache configured: no listener or route has a cache section")
        try:
            host, target, prefix = parse_purge_url(url)
        except ValueError as exc:
            raise ActionError(400, str(exc)) from None
        key = cache_key(normalise_host(host.encode()), target.encode())
        areas = list(self.sup.shared.caches.values())
        if prefix:
            loop = asyncio.get_running_loop()
            purged = sum([await loop.run_in_executor(None, purge_files, a, key, True) for a in areas])
        else:
            purged = sum(purge_files(a, key, False) for a in areas)
        self.sup.broadcast({"type": "cache_purge", "host": host, "target": target, "prefix": prefix})
        return {"ok": True, "url": url, "prefix": prefix, "purged": purged}

    # ---------------------------------------------------------------- helpers
    def _entry_backend(self, backend: str) -> None:
        if not any(b.name == backend for b in self.sup.cfg.backends):
            raise ActionError(404, f"no backend named {backend!r}")

    def _table(self, backend: str) -> Any:
        self._entry_backend(backend)
        hub = self.sup.persist
        table = hub.tables.get(backend) if hub is not None else None
        if table is None:
            raise ActionError(404, f"backend {backend!r} has no stick table (persistence source, header "
                                   "or param keeps one; cookies need none)")
        return table

    def _swap(self, new: Config) -> None:
        """Make ``new`` (same backends and servers, other weights) the running config."""
        sup = self.sup
        sup.cfg = new
        sup.health.cfg = new
        backends = {b.name: b for b in new.backends}
        for (bname, sname), e in sup.health.entries.items():
            b = backends.get(bname)
            if b is not None:
                e.backend = b
                e.server = next((s for s in b.servers if s.name == sname), e.server)

    async def _apply(self, new: Config, what: str) -> dict[str, Any]:
        self._idle()
        result = await self.sup.reload(None, config=new)
        if not result.get("ok"):
            raise ActionError(422, f"{what}: refused", list(result.get("errors", [])))
        return {"ok": True, "done": what, "generation": result.get("generation"),
                "notes": result.get("notes", []), "note": RUNTIME_NOTE}


def _with_servers(cfg: Config, backend: str, change: Any) -> Config:
    """``cfg`` with ``backend``'s server list replaced by ``change(servers)``, validated in
    full (the config's own cross-checks included): ActionError 422 naming the key."""
    data = cfg.model_dump(by_alias=True, exclude_unset=True)  # a full dump re-validates badly (persistence)
    for b in data["backends"]:
        if b["name"] == backend:
            servers = [Server.model_validate(s) for s in b["servers"]]
            b["servers"] = [s.model_dump(by_alias=True, exclude_unset=True) for s in change(servers)]
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ActionError(422, "the resulting config is not valid; nothing was changed", _problems(exc)) from None

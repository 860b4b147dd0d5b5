"""Stick tables shared by pyvs nodes through Redis (``state: {redis: URL}``).

Theory of operation
-------------------
The supervisor's hub stays the local table of its instance; Redis is where nodes
meet. Nothing on the request path ever waits for Redis:

* **Writes** are queued by :meth:`RedisStore.write` and sent by one task, all that is
  queued in one pipeline. While a pipeline is in flight new writes queue up, so the
  batch size follows the load (one round trip per batch, never one per request).
  Each entry is one Redis key, ``PREFIX:stick:BACKEND:KEY`` -> server name, with a
  ``PX`` TTL equal to the table's ``timeout``; refreshes extend it.
* **First writer wins.** A LEARN is a small Lua script: set the key if it is absent
  or already names the same server, otherwise return the server it names. When two
  nodes balance a new client differently at the same moment, the later one gets
  the earlier one's server back and corrects its tables.
* **Other nodes' entries** arrive on the Pub/Sub channel ``PREFIX:stick``: after
  each batch the writer publishes what it stored, one message per backend. Messages
  carry the node id so a node ignores its own.
* **Outage.** Any error, or a batch (or, when idle, a PING every 5 s) not answered
  within ``state.timeout``, marks Redis down: logged once, counted, writes are
  dropped (not queued: memory stays bounded), and every request keeps being served
  from the local tables. A reconnect is tried every ``state.retry_interval``.
* **Re-sync.** On (re)connecting -- and at start -- the store subscribes first (so
  nothing published during the sync is missed), pushes every live local entry with
  first-writer-wins (so sessions created during the outage reach Redis, and a
  conflicting entry already in Redis wins), then scans Redis for the entries of
  other nodes.

Staleness bound (across nodes): an entry learned on node A reaches node B's workers
after A's hub flush (one loop iteration), one Redis pipeline round trip (queued
behind at most the batch in flight), the publish round trip, and B's hub-to-worker
fan-out: a few milliseconds on a LAN. A client whose next request reaches B inside
that window is balanced afresh on B and converges on A's server with the next
batch. While Redis is down, nodes do not see each other's new sessions at all;
after the re-sync they agree again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pyvs.persist.store import LEARN, Remote, Sink

if TYPE_CHECKING:
    from pyvs.config.persist_schema import StateConfig

log = logging.getLogger("pyvs.persist")

# Set the key unless it names another server; return the server it names now.
LEARN_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""
SYNC_CHUNK = 500  # entries per pipeline during a re-sync
HEARTBEAT = 5.0  # seconds without writes after which the connection is checked with PING
MAX_QUEUE = 200_000  # writes waiting for Redis beyond this are dropped (the next re-sync repairs)
FAILURES = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


def redact(url: str) -> str:
    """The URL without its password (for logs and /status)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    """Redis-backed store: batched writes, Pub/Sub updates, re-sync after outages."""

    kind = "redis"

    def __init__(self, cfg: StateConfig, sink: Sink, *, node: str | None = None) -> None:
        assert cfg.redis is not None
        self.url = cfg.redis
        self.prefix = cfg.key_prefix
        self.timeout = cfg.timeout
        self.retry_interval = cfg.retry_interval
        self.sink = sink
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.channel = f"{self.prefix}:stick"
        self.up = False
        self.accepting = False  # connected: writes are queued (also during the re-sync)
        self.queue: list[tuple[str, str, str, str, int]] = []
        self.wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0
        self.resyncs = 0
        self.written = 0
        self.received = 0
        self.corrections = 0
        self.dropped = 0
        self.last_error = ""

    def key(self, backend: str, key: str) -> str:
        return f"{self.prefix}:stick:{backend}:{key}"

    # ---------------------------------------------------------------- interface
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        self.wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def write(self, backend: str, key: str, server: str, op: str, ttl: float) -> None:
        if not self.accepting or len(self.queue) >= MAX_QUEUE:
            self.dropped += 1  # the re-sync after the outage pushes the whole table
            return
        self.queue.append((backend, key, server, op, max(1, int(ttl * 1000))))
        self.wake.set()

    def statistics(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": redact(self.url),
            "up": self.up,
            "errors": self.errors,
            "last_error": self.last_error,
            "resyncs": self.resyncs,
            "written": self.written,
            "received": self.received,
            "corrections": self.corrections,
            "dropped_while_down": self.dropped,
            "queued": len(self.queue),
        }

    # ---------------------------------------------------------------- connection
    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._session()
            except FAILURES as exc:
                self._mark_down(exc)
            try:  # wait before reconnecting; stop() cuts the wait short
                await asyncio.wait_for(self._stopping.wait(), self.retry_interval)
            except TimeoutError:
                pass

    def _mark_down(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        self.queue.clear()
        self.accepting = False
        if self.up:
            self.up = False
            log.error("redis %s unreachable (%s): serving sessions from the local tables; will re-sync",
                      redact(self.url), self.last_error)
        elif self.resyncs == 0 and self.errors == 1:
            log.error("redis %s unreachable (%s): serving sessions from the local tables; will retry",
                      redact(self.url), self.last_error)

    async def _session(self) -> None:
        client = aioredis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True, health_check_interval=0,
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        reader: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(client.ping(), self.timeout)
            self.accepting = True
            await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout)
            reader = asyncio.get_running_loop().create_task(self._read(pubsub))
            script = client.register_script(LEARN_SCRIPT)
            pushed, pulled = await self._resync(client, script)
            self.up = True
            self.resyncs += 1
            log.warning("redis %s: connected; re-synced (pushed %d entries, pulled %d)",
                        redact(self.url), pushed, pulled)
            while True:
                try:
                    await asyncio.wait_for(self.wake.wait(), HEARTBEAT)
                except TimeoutError:  # idle: make sure Redis is still there (a silent network loss)
                    await asyncio.wait_for(client.ping(), self.timeout)
                    continue
                self.wake.clear()
                if reader.done():
                    reader.result()  # re-raises why the subscription ended
                    raise ConnectionError("subscription ended")
                if self._stopping.is_set():
                    return
                batch, self.queue = self.queue, []
                if batch:
                    await asyncio.wait_for(self._write(client, script, batch), self.timeout)
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            try:
                await asyncio.wait_for(pubsub.aclose(), self.timeout)  # type: ignore[no-untyped-call,unused-ignore]  # typed in some redis versions
                await asyncio.wait_for(client.aclose(), self.timeout)
            except FAILURES:
                pass

    async def _read(self, pubsub: PubSub) -> None:
        """Other nodes' entries; wakes the writer when the subscription dies."""
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if msg is None or msg.get("type") != "message":
                    continue
                try:
                    data = json.loads(msg["data"])
                    if data.get("n") == self.node:
                        continue
                    entries = [(str(k), str(s), float(ttl) / 1000) for k, s, ttl in data["e"]]
                    backend = str(data["b"])
                except (ValueError, KeyError, TypeError):
                    continue
                self.received += len(entries)
                self.sink.on_remote(backend, entries)
        finally:
            self.wake.set()

    # ---------------------------------------------------------------- writing
    async def _write(self, client: aioredis.Redis, script: Any,
                     batch: list[tuple[str, str, str, str, int]]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for backend, key, server, op, ttl in batch:
                if op == LEARN:
                    await script(keys=[self.key(backend, key)], args=[server, ttl], client=pipe)
                else:
                    pipe.set(self.key(backend, key), server, px=ttl)
            results = await pipe.execute()
        self.written += len(batch)
        stored: dict[str, list[list[Any]]] = {}
        fixes: dict[str, list[Remote]] = {}
        for (backend, key, server, op, ttl), result in zip(batch, results, strict=True):
            winner = server if op != LEARN else str(result)
            if winner != server:
                self.corrections += 1
                fixes.setdefault(backend, []).append((key, winner, ttl / 1000))
            else:
                stored.setdefault(backend, []).append([key, server, ttl])
        for backend, entries in fixes.items():
            self.sink.on_remote(backend, entries)
        if stored:
            async with client.pipeline(transaction=False) as pipe:
                for backend, items in stored.items():
                    pipe.publish(self.channel, json.dumps({"n": self.node, "b": backend, "e": items},
                                                          separators=(",", ":")))
                await pipe.execute()

    async def _resync(self, client: aioredis.Redis, script: Any) -> tuple[int, int]:
        """Push every live local entry (first writer wins), then pull everyone else's."""
        local = list(self.sink.local_entries())
        pushed = 0
        for i in range(0, len(local), SYNC_CHUNK):
            chunk = local[i : i + SYNC_CHUNK]
            batch = [(b, k, s, LEARN, max(1, int(ttl * 1000))) for b, k, s, ttl in chunk]
            await asyncio.wait_for(self._write(client, script, batch), self.timeout * 5)
            pushed += len(chunk)
        pulled = 0
        for backend in self.sink.backends():
            head = self.key(backend, "")
            keys: list[str] = []
            async for k in client.scan_iter(match=_glob_escape(head) + "*", count=1000):
                keys.append(k)
                if len(keys) >= SYNC_CHUNK:
                    pulled += await self._pull(client, backend, head, keys)
                    keys = []
            if keys:
                pulled += await self._pull(client, backend, head, keys)
        return pushed, pulled

    async def _pull(self, client: aioredis.Redis, backend: str, head: str, keys: list[str]) -> int:
        async with client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            res = await asyncio.wait_for(pipe.execute(), self.timeout * 5)
        entries: list[Remote] = []
        for i, k in enumerate(keys):
            value, ttl = res[2 * i], res[2 * i + 1]
            if value is not None and isinstance(ttl, int) and ttl > 0:
                entries.append((k[len(head):], str(value), ttl / 1000))
        if entries:
            self.sink.on_remote(backend, entries)
        return len(entries)

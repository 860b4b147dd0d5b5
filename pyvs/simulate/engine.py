"""The discrete-event engine: the real scheduler classes against a synthetic pool.

Theory of operation
-------------------
One run = one algorithm against one :class:`~pyvs.simulate.workload.Workload`. The
engine plays the runtime's part exactly as the data path does: ``pick`` with a
:class:`~pyvs.balance.base.PickContext` (``now`` set), ``taken`` when a request is
handed to a server, ``released`` + ``observed(latency, ok, now)`` when it finishes,
``server_down`` / ``server_up`` when (simulated) health checks notice, agent
replies for ``capacity``, and :class:`~pyvs.balance.slowstart.SlowStart` ramps.
Nothing in :mod:`pyvs.balance` knows it is being simulated.

Events live in one heap of ``(time, seq, kind, a, b, c)`` tuples; ``seq`` makes
ordering total and deterministic, so a run is a pure function of the workload, the
algorithm and the seed. Arrivals are open-loop (Poisson) and drawn from random
streams of their own, so every algorithm sees the very same requests, costs and
clients; only the scheduler's choices differ.

A failed server's in-flight requests are invalidated by bumping its ``epoch``:
their completion events are still in the heap but are ignored when they pop,
which is cheaper than deleting from a heap.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from random import Random
from typing import Any

from pyvs.balance.base import PickContext, Scheduler, Target, create
from pyvs.balance.capacity import Capacity
from pyvs.balance.slowstart import WEIGHT_SCALE, SlowStart
from pyvs.simulate.workload import Workload, percentile

_ARRIVE, _DONE, _INCIDENT, _HEALTH, _AGENT, _RAMP = range(6)


@dataclass(frozen=True, slots=True)
class AlgorithmSpec:
    """One column of the comparison: ``spec`` plus ``hash_type`` and options."""

    label: str
    spec: str
    hash_type: str = "map"
    options: tuple[tuple[str, float], ...] = ()

    def option_dict(self) -> dict[str, Any]:
        # Any, not float: the dict is spread into create()'s keyword arguments.
        return dict(self.options)


def parse_algorithm(token: str) -> AlgorithmSpec:
    """``NAME[(ARG)][:HASH_TYPE][:OPTION=VALUE...]``, e.g. ``source:consistent:balance_factor=1.25``."""
    token = token.strip()
    head, _, rest = token.partition(")") if ")" in token else ("", "", token)
    spec_part, *extra = rest.split(":")
    spec = f"{head})" + spec_part if head else spec_part
    hash_type = "map"
    options: list[tuple[str, float]] = []
    for item in extra:
        if "=" in item:
            key, _, value = item.partition("=")
            options.append((key.strip(), float(value)))
        elif item:
            hash_type = item.strip()
    return AlgorithmSpec(token, spec.strip(), hash_type, tuple(options))


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run measured; latencies in seconds, utilisation in 0..1 per server."""

    label: str
    requests: int
    completed: int
    dropped: int
    p50: float
    p99: float
    p999: float
    mean: float
    utilisation: tuple[float, ...]
    served: tuple[int, ...]

    @property
    def max_util(self) -> float:
        return max(self.utilisation)

    @property
    def min_util(self) -> float:
        return min(self.utilisation)

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.requests if self.requests else 0.0


class _Server:
    """A simulated server: worker slots, a FIFO queue, an epoch for failures."""

    __slots__ = (
        "alive",
        "alive_since",
        "alive_time",
        "busy",
        "busy_time",
        "epoch",
        "nominal",
        "queue",
        "served",
        "speed",
        "workers",
    )

    def __init__(self, speed: float, workers: int) -> None:
        self.nominal = speed
        self.speed = speed
        self.workers = workers
        self.busy = 0
        self.queue: deque[tuple[float, float]] = deque()
        self.alive = True
        self.epoch = 0
        self.busy_time = 0.0
        self.alive_time = 0.0
        self.alive_since = 0.0
        self.served = 0


def _contexts(w: Workload) -> list[PickContext]:
    """One reusable context per client: every key an algorithm might hash on."""
    return [
        PickContext(
            client_ip=f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}",
            path=f"/item/{k}",
            query=f"id={k}",
            headers={"X-User": f"user{k}"},
            cookies={"SID": f"sess{k}"},
        )
        for k in range(w.clients)
    ]


def simulate(w: Workload, algo: AlgorithmSpec) -> RunResult:
    """Run ``algo`` against ``w``; deterministic for a given ``w.seed``."""
    return _Run(w, algo).run()


def simulate_all(w: Workload, algos: list[AlgorithmSpec], jobs: int = 1) -> list[RunResult]:
    """Every algorithm against the same workload, in parallel processes when ``jobs > 1``.

    Runs are independent and CPU-bound, so processes (not threads) are what uses a
    second core; results come back in the order of ``algos`` either way.
    """
    for algo in algos:  # fail fast, in this process, on a bad spec
        create(algo.spec, [Target(0, "probe")], hash_type=algo.hash_type, **algo.option_dict())
    jobs = max(1, min(jobs, len(algos), os.cpu_count() or 1))
    if jobs == 1:
        return [simulate(w, a) for a in algos]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(simulate, [w] * len(algos), algos))


class _Run:
    """The state of one run; :meth:`run` is the event loop."""

    def __init__(self, w: Workload, algo: AlgorithmSpec) -> None:
        self.w = w
        self.algo = algo
        specs = w.servers
        self.targets = [Target(i, s.name, max(1, round(s.speed * WEIGHT_SCALE))) for i, s in enumerate(specs)]
        for t, s in zip(self.targets, specs, strict=True):
            t.maxconn = s.workers  # read by ``first`` only: fill a server's slots, then the next
        self.full_weight = [t.weight for t in self.targets]
        self.sched: Scheduler = create(
            algo.spec, self.targets, seed=w.seed, hash_type=algo.hash_type, **algo.option_dict()
        )
        self.servers = [_Server(s.speed, s.workers) for s in specs]
        self.ramp = SlowStart(w.slowstart) if w.slowstart > 0 else None
        self.heap: list[tuple[float, int, int, int, float, float, int]] = []
        self.seq = 0
        self.dropped = 0
        self.latencies: list[float] = []

    def push(self, t: float, kind: int, a: int = 0, b: float = 0.0, c: float = 0.0, d: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b, c, d))

    def start(self, i: int, now: float, arrival: float, cost: float) -> None:
        srv = self.servers[i]
        srv.busy += 1
        svc = cost / srv.speed
        self.push(now + svc, _DONE, i, arrival, svc, srv.epoch)

    def dispatch(self, ctx: PickContext, now: float, cost: float) -> None:
        sched = self.sched
        for attempt in (0, 1):
            t = sched.pick(ctx)
            if t is None:
                break
            i = t.index
            srv = self.servers[i]
            sched.taken(t)
            if not srv.alive:  # connection refused: fails fast, retried once elsewhere
                sched.released(t)
                sched.observed(t, 0.0, False, now)
                if not attempt:
                    ctx = PickContext(ctx.client_ip, ctx.path, ctx.query, ctx.headers, ctx.cookies, frozenset({i}), now)
                continue
            if srv.busy < srv.workers:
                self.start(i, now, now, cost)
            elif len(srv.queue) < self.w.queue_limit:
                srv.queue.append((now, cost))
            else:  # the server answers 503 at once
                sched.released(t)
                sched.observed(t, 0.0, False, now)
                self.dropped += 1
            return
        self.dropped += 1

    def complete(self, now: float, i: int, arrival: float, svc: float, epoch: int) -> None:
        srv = self.servers[i]
        if epoch != srv.epoch:
            return  # lost when the server failed
        srv.busy -= 1
        srv.served += 1
        horizon = self.w.duration
        srv.busy_time += max(0.0, min(now, horizon) - max(now - svc, 0.0))
        latency = now - arrival
        self.latencies.append(latency)
        t = self.targets[i]
        self.sched.released(t)
        self.sched.observed(t, latency, True, now)
        if srv.queue:
            arrival, cost = srv.queue.popleft()
            self.start(i, now, arrival, cost)

    def incident(self, n: int, ending: bool, now: float) -> None:
        inc = self.w.incidents[n]
        i = inc.server
        srv = self.servers[i]
        if inc.kind == "slow":
            srv.speed = srv.nominal if ending else srv.nominal * inc.factor
        elif not ending and srv.alive:
            # Everything it held is lost: the proxy sees resets.
            t = self.targets[i]
            for _ in range(srv.busy + len(srv.queue)):
                self.sched.released(t)
                self.sched.observed(t, 0.0, False, now)
                self.dropped += 1
            srv.busy = 0
            srv.queue.clear()
            srv.epoch += 1
            srv.alive = False
            srv.alive_time += max(0.0, min(now, self.w.duration) - srv.alive_since)
            self.push(now + self.w.detect, _HEALTH, i, 0.0)
        elif ending and not srv.alive:
            srv.alive = True
            srv.alive_since = min(now, self.w.duration)
            self.push(now + self.w.detect, _HEALTH, i, 1.0)

    def health(self, i: int, up: bool, now: float) -> None:
        t = self.targets[i]
        sched, ramp = self.sched, self.ramp
        if up and self.servers[i].alive and not t.eligible:
            sched.server_up(t)
            if ramp is not None:
                sched.weight_changed(t, ramp.start(t, self.full_weight[i], now))
                self.schedule_ramp()
        elif not up and not self.servers[i].alive and t.eligible:
            if ramp is not None:
                ramp.cancel(t)
            sched.server_down(t)

    def schedule_ramp(self) -> None:
        deadline = self.ramp.next_deadline() if self.ramp is not None else None
        if deadline is not None:
            self.push(deadline, _RAMP)

    def agent(self, now: float) -> None:
        sched = self.sched
        assert isinstance(sched, Capacity)
        for i, srv in enumerate(self.servers):
            if srv.alive:  # a dead server's agent does not answer
                sched.report(self.targets[i], f"{round(100 * srv.speed / srv.nominal)}%")
        if now + self.w.agent_interval < self.w.duration:
            self.push(now + self.w.agent_interval, _AGENT)

    def run(self) -> RunResult:
        w = self.w
        arrivals = Random(f"{w.seed}:arrivals")
        draw_cost = w.cost.sampler(Random(f"{w.seed}:costs"))
        pick_client = Random(f"{w.seed}:clients").choices
        cum = w.client_weights()
        population = range(w.clients)
        contexts = _contexts(w)
        rate, horizon = w.rate, w.duration

        self.push(arrivals.expovariate(rate), _ARRIVE)
        for n, inc in enumerate(w.incidents):
            self.push(inc.at, _INCIDENT, n, 0.0)
            if inc.until is not None:
                self.push(inc.until, _INCIDENT, n, 1.0)
        if isinstance(self.sched, Capacity):
            self.push(0.0, _AGENT)

        heap = self.heap
        pop = heapq.heappop
        requests = 0
        while heap:
            now, _, kind, a, b, c, d = pop(heap)
            if kind == _DONE:
                self.complete(now, a, b, c, d)
            elif kind == _ARRIVE:
                requests += 1
                ctx = contexts[pick_client(population, cum_weights=cum)[0]]
                ctx.now = now
                self.dispatch(ctx, now, draw_cost())
                nxt = now + arrivals.expovariate(rate)
                if nxt < horizon:
                    self.push(nxt, _ARRIVE)
            elif kind == _INCIDENT:
                self.incident(a, b == 1.0, now)
            elif kind == _HEALTH:
                self.health(a, b == 1.0, now)
            elif kind == _AGENT:
                self.agent(now)
            elif kind == _RAMP and self.ramp is not None:
                for t, weight in self.ramp.on_timer(now):
                    self.sched.weight_changed(t, weight)
                self.schedule_ramp()
        return self.result(requests)

    def result(self, requests: int) -> RunResult:
        horizon = self.w.duration
        for srv in self.servers:
            if srv.alive:
                srv.alive_time += max(0.0, horizon - srv.alive_since)
        lat = sorted(self.latencies)
        return RunResult(
            label=self.algo.label,
            requests=requests,
            completed=len(lat),
            dropped=self.dropped,
            p50=percentile(lat, 50),
            p99=percentile(lat, 99),
            p999=percentile(lat, 99.9),
            mean=sum(lat) / len(lat) if lat else float("nan"),
            utilisation=tuple(
                min(1.0, s.busy_time / (s.workers * s.alive_time)) if s.alive_time > 0 else 0.0 for s in self.servers
            ),
            served=tuple(s.served for s in self.servers),
        )

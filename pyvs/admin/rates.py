"""Request and error rates from the supervisor's counters, for the API, ``pyvs ctl`` and the dashboard.

Workers ship cumulative counters every ``global.stats_interval``; a rate is the
difference between two samples over the time between them. One sample is taken per
second (:meth:`RateTracker.sample`, driven by the admin server) and the rate is taken
over a window of up to ``WINDOW`` seconds, so the step of a counter that arrives once
per stats interval does not show as a saw-tooth. Sans-I/O: the caller passes ``now``.

A counter that goes down (a worker restarted, a reload dropped a backend) restarts
the window for that key instead of showing a negative rate.

Latency percentiles come from the same window: the difference between the first and
the last sample of a latency histogram (``status["traffic"]``, kept per listener,
backend and server by the workers: :mod:`pyvs.runtime.stats`) counts the requests
that ended inside it, and a quantile is interpolated linearly inside the bucket that
holds it, as Prometheus's ``histogram_quantile`` does. Quantiles in the last, open
bucket are reported as its lower bound.
"""

from __future__ import annotations

import collections
from typing import Any

from pyvs.runtime.stats import LAT_SUM, LATENCY_BOUNDS, by_class, histogram

WINDOW = 5.0  # seconds of samples a rate is computed over
QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))


def counters(status: dict[str, Any]) -> dict[str, float]:
    """The counters of a ``/status`` document that rates are computed for, by a flat key:
    ``total.requests``, ``total.5xx``, ``backend.B.requests``, ``server.B/S.requests``..."""
    out: dict[str, float] = {}
    totals = status.get("totals", {})
    out["total.requests"] = float(totals.get("requests", 0))
    out["total.5xx"] = float(totals.get("responses_5xx", 0))
    out["total.4xx"] = float(totals.get("responses_4xx", 0))
    for b in status.get("backends", []):
        breq = b5 = 0.0
        for s in b.get("servers", []):
            key = f"server.{b['name']}/{s['name']}"
            req = float(s.get("requests", 0))
            err = float(s.get("responses_5xx", 0))
            out[key + ".requests"] = req
            out[key + ".5xx"] = err
            breq += req
            b5 += err
        out[f"backend.{b['name']}.requests"] = breq
        out[f"backend.{b['name']}.5xx"] = b5
    for name, t in (status.get("traffic") or {}).get("listeners", {}).items():
        out[f"listener.{name}.requests"] = float(sum(histogram(t)))
        out[f"listener.{name}.5xx"] = float(by_class(t, 5))
    return out


def histograms(status: dict[str, Any]) -> dict[str, list[float]]:
    """Latency histograms (bucket counts, then the sum of latencies) by the keys of
    :func:`counters`: ``listener.L``, ``backend.B``, ``server.B/S``."""
    tr = status.get("traffic") or {}
    out: dict[str, list[float]] = {}
    for name, t in tr.get("listeners", {}).items():
        out[f"listener.{name}"] = [*histogram(t), t[LAT_SUM]]
    for name, t in tr.get("backends", {}).items():
        out[f"backend.{name}"] = [*histogram(t), t[LAT_SUM]]
    for bname, sname, t in tr.get("servers", []):
        out[f"server.{bname}/{sname}"] = [*histogram(t), t[LAT_SUM]]
    return out


def quantile(q: float, buckets: list[float]) -> float:
    """Seconds: the ``q`` quantile of a histogram's bucket counts (upper bounds
    ``LATENCY_BOUNDS``, then +Inf); 0.0 for an empty one."""
    total = sum(buckets)
    if total <= 0:
        return 0.0
    rank = q * total
    seen = 0.0
    for i, n in enumerate(buckets):
        if n > 0 and seen + n >= rank:
            if i >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            low = LATENCY_BOUNDS[i - 1] if i else 0.0
            return low + (LATENCY_BOUNDS[i] - low) * (rank - seen) / n
        seen += n
    return LATENCY_BOUNDS[-1]


class RateTracker:
    """Keeps the last ``WINDOW`` seconds of samples; answers per-second rates."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.samples: collections.deque[tuple[float, dict[str, float]]] = collections.deque()
        self.hists: collections.deque[dict[str, list[float]]] = collections.deque()

    def sample(self, now: float, status: dict[str, Any]) -> None:
        self.samples.append((now, counters(status)))
        self.hists.append(histograms(status))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
            self.hists.popleft()

    def latency(self, key: str) -> dict[str, float | None]:
        """``{"p50_ms", "p95_ms", "p99_ms", "mean_ms"}`` of the requests of ``key``
        (``listener.L``, ``backend.B``, ``server.B/S``) that ended in the window; None
        without any."""
        empty: dict[str, float | None] = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
        if len(self.hists) < 2 or key not in self.hists[-1]:
            return empty
        last = self.hists[-1][key]
        for first in self.hists:
            h0 = first.get(key, [0.0] * len(last))
            delta = [b - a for a, b in zip(h0, last, strict=False)]
            if all(d >= 0 for d in delta):
                break
        else:
            return empty
        buckets, total_s = delta[:-1], delta[-1]
        n = sum(buckets)
        if n <= 0:
            return empty
        out: dict[str, float | None] = {name: round(quantile(q, buckets) * 1000, 2) for name, q in QUANTILES}
        out["mean_ms"] = round(total_s / n * 1000, 2)
        return out

    def rate(self, key: str) -> float:
        """Per-second rate of ``key`` over the window (0.0 without two samples)."""
        if len(self.samples) < 2:
            return 0.0
        t1, last = self.samples[-1]
        v1 = last.get(key)
        if v1 is None:
            return 0.0
        for t0, first in self.samples:
            v0 = first.get(key, 0.0)  # not there yet: nothing counted yet
            if v0 <= v1 and t1 > t0:
                return round((v1 - v0) / (t1 - t0), 2)
        return 0.0

    def rates(self, prefix: str) -> dict[str, float]:
        """``{"req_per_s", "errors_per_s", "error_rate"}`` of ``total``, ``backend.B`` or
        ``server.B/S``; the error rate is the share of 5xx answers in the window."""
        req = self.rate(f"{prefix}.requests")
        err = self.rate(f"{prefix}.5xx")
        return {"req_per_s": req, "errors_per_s": err, "error_rate": round(err / req, 4) if req else 0.0}

"""DNS responder counters: queries by transport, answers by rcode and question type,
truncations, malformed and dropped queries, answer rebuilds, GSLB polls.

Theory of operation
-------------------
Counting happens in the workers, in :class:`pyvs.dns.responder.DnsService`, and must
not slow the per-query path (``make bench-dns``). So the counters are plain integers
and one preallocated list, and the per-query cost is one list increment:

* ``queries`` (every datagram or TCP message handed to the responder) was already an
  attribute increment; ``tcp_queries`` is bumped by the TCP connection only, so UDP is
  ``queries - tcp_queries`` and the UDP path pays nothing for the split;
* ``answered`` is a flat list of ``len(RCODES) x WIDTH`` slots: one per (response
  code, question type). The slot of a precomputed answer never changes, so
  :mod:`pyvs.dns.answers` stores it on each :class:`~pyvs.dns.answers.Variants`
  (``stat``, from :func:`answer_slot`) when it builds the answer, and the fast path
  does ``answered[v.stat] += 1``: no lookup, no string, no object per query. The
  slow path (dnspython) computes the slot with :func:`answer_slot` as it goes;
* the rare events (truncated, slow path, malformed, dropped) are attributes bumped
  where they happen.

The last column of each rcode row (``NO_QUESTION``) holds answers to queries whose
question could not be read (a FORMERR to garbage): they count for their rcode, not
for any type. So, in every worker at every moment, ``queries == sum(answered) +
dropped``: each query gets exactly one answer or is dropped (a response, a broken
EDNS, less than a header: answering those would make pyvs a reflector).

Each worker ships :func:`report` (lists of integers, per dns listener) with its
other counters; the supervisor sums them with :func:`aggregate` into ``/status``'s
``dns`` object, which :mod:`pyvs.admin.metrics` exports as the ``pyvs_dns_*``
families. Counters are summed over every worker report the supervisor keeps,
retired workers' last ones included (counters never go back after a reload); the
site state (up, servers up) and the answer table sizes are gauges and are read from
the running workers only.

This module imports no dnspython: the supervisor imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvs.config.schema import Listener
    from pyvs.dns.responder import DnsRuntime, DnsService

# Response codes shown one by one (what NSD and PowerDNS count); BADVERS and the rest
# are "other". RCODE_SLOT maps an rcode (0-15) to its row.
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other")
_OTHER_RCODE = len(RCODES) - 1
RCODE_SLOT = tuple(range(6)) + (_OTHER_RCODE,) * 10

# Question types shown one by one; anything else (ANY, PTR, CAA, HTTPS...) is "other".
QTYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "SOA", "other")
_QTYPE_SLOT = {1: 0, 28: 1, 5: 2, 15: 3, 16: 4, 33: 5, 2: 6, 6: 7}
_OTHER_QTYPE = len(QTYPES) - 1
NO_QUESTION = len(QTYPES)  # a hidden column: answers to queries without a readable question
WIDTH = len(QTYPES) + 1
ANSWER_SLOTS = len(RCODES) * WIDTH

# A worker's report of one listener: these scalars, then the ANSWER_SLOTS answers.
FIELDS = ("queries", "tcp", "truncated", "slow", "malformed", "dropped", "rebuilds")
_QUERIES, _TCP, _TRUNCATED, _SLOW, _MALFORMED, _DROPPED, _REBUILDS = range(len(FIELDS))
_LENGTH = len(FIELDS) + ANSWER_SLOTS


def answer_slot(rcode: int, qtype: int | None) -> int:
    """The ``answered`` slot of a response with ``rcode`` to a question of ``qtype``
    (None: no readable question). Called when an answer is built, not per query."""
    rc = int(rcode)
    row = RCODE_SLOT[rc] if 0 <= rc < len(RCODE_SLOT) else _OTHER_RCODE
    col = NO_QUESTION if qtype is None else _QTYPE_SLOT.get(int(qtype), _OTHER_QTYPE)
    return row * WIDTH + col


def snapshot(svc: DnsService) -> list[int]:
    """One listener's counters in one worker: :data:`FIELDS`, then the answers."""
    return [svc.queries, svc.tcp_queries, svc.truncated, svc.slow, svc.malformed, svc.dropped,
            svc.answers.rebuilds, *svc.answered]


def _sites(svc: DnsService) -> dict[str, dict[str, Any]]:
    return {name: {"polls": st.polls, "failed": st.failed_polls, "up": st.up,
                   "servers_up": st.last_up_count, "error": st.last_error}
            for name, st in svc.remote.states.items()}


def report(rt: DnsRuntime | None) -> dict[str, Any] | None:
    """This worker's DNS counters per dns listener (None without any): ``counts``
    (:func:`snapshot`), the answer table's sizes, the remote sites' poll state."""
    if rt is None or not rt.services:
        return None
    return {svc.cfg.name: {"counts": snapshot(svc), "precomputed": len(svc.answers.table),
                           "cached": len(svc.answers.cache), "sites": _sites(svc)}
            for svc in rt.services}


def worker_row(rep: dict[str, Any]) -> dict[str, Any]:
    """``dns_queries`` for a worker's row in ``/status`` (how the kernel spread the
    resolvers over the workers); ``{}`` for a worker without dns listeners."""
    dns = rep.get("dns")
    if not dns:
        return {}
    return {"dns_queries": sum(int(v["counts"][_QUERIES]) for v in dns.values() if v.get("counts"))}


def _view(c: list[int]) -> dict[str, Any]:
    """Summed counters as ``/status`` shows them."""
    answers = c[len(FIELDS):]
    rcodes = {name: sum(answers[r * WIDTH:(r + 1) * WIDTH]) for r, name in enumerate(RCODES)}
    qtypes = {name: sum(answers[r * WIDTH + q] for r in range(len(RCODES))) for q, name in enumerate(QTYPES)}
    return {
        "queries": c[_QUERIES],
        "udp": c[_QUERIES] - c[_TCP],
        "tcp": c[_TCP],
        "answers": sum(answers),
        "rcodes": rcodes,
        "qtypes": qtypes,
        "truncated": c[_TRUNCATED],
        "malformed": c[_MALFORMED],
        "dropped": c[_DROPPED],
        "slow": c[_SLOW],
        "rebuilds": c[_REBUILDS],
    }


def _add(into: list[int], v: Iterable[Any]) -> None:
    for i, x in enumerate(v):
        if i >= _LENGTH:
            break
        into[i] += int(x)


def aggregate(reports: list[dict[str, Any]], live: list[dict[str, Any]],
              listeners: Iterable[Listener]) -> dict[str, Any]:
    """The workers' :func:`report` summed for ``/status``: ``{"dns": {"listeners":
    {name: ...}, "total": ...}}``; ``{}`` without a dns listener configured now.
    ``reports``: every report the supervisor keeps (counters); ``live``: those of the
    running workers (the gauges: site state, table sizes)."""
    names = [lc.name for lc in listeners if lc.mode == "dns"]
    if not names:
        return {}
    sums = {n: [0] * _LENGTH for n in names}
    polls: dict[str, dict[str, list[int]]] = {n: {} for n in names}
    for rep in reports:
        for name, v in (rep.get("dns") or {}).items():
            if name not in sums:
                continue  # a retired worker's listener that is gone
            _add(sums[name], v.get("counts") or ())
            for site, s in (v.get("sites") or {}).items():
                p = polls[name].setdefault(site, [0, 0])
                p[0] += int(s.get("polls", 0))
                p[1] += int(s.get("failed", 0))
    total = [0] * _LENGTH
    out: dict[str, Any] = {}
    for name in names:
        c = sums[name]
        _add(total, c)
        mine = [r["dns"][name] for r in live if (r.get("dns") or {}).get(name)]
        view = _view(c)
        view["precomputed"] = max((int(v.get("precomputed", 0)) for v in mine), default=0)
        view["cached"] = sum(int(v.get("cached", 0)) for v in mine)
        view["sites"] = _site_views(polls[name], [v.get("sites") or {} for v in mine])
        out[name] = view
    return {"dns": {"listeners": out, "total": _view(total)}}


def _site_views(polls: dict[str, list[int]], live: list[dict[str, Any]]) -> dict[str, Any]:
    """Remote GSLB sites: polls and failed polls summed over the workers (each worker
    polls every site); ``up`` when every running worker sees the site up (they poll on
    their own, so they can disagree for an interval), ``up_workers`` how many do."""
    out: dict[str, Any] = {}
    for site in sorted({*polls, *(s for w in live for s in w)}):
        states = [w[site] for w in live if site in w]
        counts = [s["servers_up"] for s in states if s.get("servers_up") is not None]
        errors = [s["error"] for s in states if s.get("error")]
        up_workers = sum(1 for s in states if s.get("up"))
        p = polls.get(site, [0, 0])
        out[site] = {
            "up": up_workers == len(states) if states else None,  # None: no running worker told yet
            "up_workers": up_workers,
            "polls": p[0],
            "failed": p[1],
            "servers_up": min(counts) if counts else None,
            "error": errors[0] if errors else None,
        }
    return out

"""RFC 9111 rules of a shared cache, without I/O and without a clock.

Theory of operation
-------------------
Everything here is a pure function of header values and times passed in (seconds
since the epoch, as floats), so the cache's behaviour is tested rule by rule with an
injected clock (tests/unit/accel/test_freshness.py).

* :func:`directives` reads a Cache-Control value into ``{name: argument}``.
* :func:`storable` is RFC 9111 3 for a *shared* cache: GET only, a final status this
  cache understands, no ``no-store`` (request or response), no ``private``, a request
  with Authorization only when the response says ``public``, ``s-maxage`` or
  ``must-revalidate`` (3.5), and a freshness lifetime (explicit, or heuristic when it is
  enabled). ``no-cache`` responses and ``Vary: *`` are not stored either: this cache
  does not revalidate yet, so it could never serve them.
* :func:`lifetime` is 4.2.1: ``s-maxage``, else ``max-age``, else ``Expires - Date``,
  else (only with the heuristic) 10% of ``Date - Last-Modified`` (4.2.2) for the
  statuses that are heuristically cacheable.
* :func:`current_age` is 4.2.3 word for word.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

# Final statuses this cache stores (RFC 9110 15.1 "heuristically cacheable", less 206:
# partial content is not combined here).
CACHEABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


def directives(value: bytes | None) -> dict[bytes, bytes | None]:
    """``{directive: argument or None}`` of a Cache-Control value (names lower-cased)."""
    out: dict[bytes, bytes | None] = {}
    if not value:
        return out
    for part in value.split(b","):
        name, eq, arg = part.strip().partition(b"=")
        name = name.strip().lower()
        if name:
            out[name] = arg.strip().strip(b'"') if eq else None
    return out


def seconds(arg: bytes | None) -> float | None:
    """A delta-seconds argument, or None when absent or malformed (RFC 9111 1.2.2)."""
    if arg is None or not arg.isdigit():
        return None
    return float(int(arg))


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date as epoch seconds, or None (an invalid date is as good as none)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def lifetime(cc: dict[bytes, bytes | None], *, status: int, date: float | None, expires: bytes | None,
             last_modified: float | None, heuristic: bool) -> float:
    """The freshness lifetime in seconds (0 when the response is stale on arrival)."""
    for name in (b"s-maxage", b"max-age"):
        if name in cc:
            s = seconds(cc[name])
            return s if s is not None else 0.0
    if expires is not None:
        exp = http_date(expires)
        if exp is None or date is None:
            return 0.0  # an invalid Expires means already expired (RFC 9111 5.3)
        return max(0.0, exp - date)
    if heuristic and last_modified is not None and date is not None and status in CACHEABLE_STATUS:
        return max(0.0, (date - last_modified) / 10)
    return 0.0


def storable(method: bytes, status: int, req_cc: dict[bytes, bytes | None], resp_cc: dict[bytes, bytes | None],
             *, authorization: bool, vary_star: bool, fresh_for: float) -> bool:
    """May a shared cache store this response (and later serve it without asking)?"""
    if method != b"GET" or status not in CACHEABLE_STATUS or vary_star:
        return False
    if b"no-store" in req_cc or b"no-store" in resp_cc or b"private" in resp_cc or b"no-cache" in resp_cc:
        return False
    if authorization and not (b"public" in resp_cc or b"s-maxage" in resp_cc or b"must-revalidate" in resp_cc):
        return False
    return fresh_for > 0


def current_age(*, now: float, request_time: float, response_time: float, date: float | None,
                age_value: float) -> float:
    """RFC 9111 4.2.3: the age of a stored response at ``now``."""
    apparent_age = max(0.0, response_time - (date if date is not None else response_time))
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time
    return corrected_initial_age + resident_time


def request_wants_fresh(req_cc: dict[bytes, bytes | None], pragma: bytes | None) -> bool:
    """The request forbids an answer from cache without asking the server: ``no-cache``,
    ``max-age=0`` or (without Cache-Control) ``Pragma: no-cache`` (RFC 9111 5.2.1, 5.4)."""
    if b"no-cache" in req_cc or b"no-store" in req_cc:
        return True
    if b"max-age" in req_cc and seconds(req_cc[b"max-age"]) == 0:
        return True
    return not req_cc and pragma is not None and b"no-cache" in pragma.lower()

"""How a stream to an HTTP/2 server (``proto: h2``) leaves its shared connection
(pyvs/h2/upstream.py), with a recording stand-in for the connection: what it gives back
and what it resets decides whether the pooled connection stays usable."""

from __future__ import annotations

from typing import Any

from pyvs.h2.upstream import CANCEL, H2UpstreamStream


class Conn:
    def __init__(self) -> None:
        self.streams: dict[int, Any] = {}
        self.pending: set[Any] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.goaway = False
        self.closed = False

    def ack(self, sid: int, n: int) -> None:
        self.calls.append(("ack", sid, n))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def reset(self, sid: int, code: int) -> None:
        self.calls.append(("reset", sid, code))

    def _close(self, exc: Exception | None) -> None:
        self.closed = True
        self.calls.append(("close",))


class Sweeper:
    def discard(self, _item: object) -> None: ...


def stream(conn: Conn, sid: int = 5, **state: Any) -> H2UpstreamStream:
    st = object.__new__(H2UpstreamStream)  # (no pool or server needed for its end)
    values: dict[str, Any] = {"conn": conn, "sid": sid, "closed": False, "owner": None, "sweeper": Sweeper(),
                              "ended": True, "remaining": 0, "out": bytearray(), "chunked_out": False,
                              "req_framer": None, "unacked": 0}
    values.update(state)
    for k, v in values.items():
        setattr(st, k, v)
    conn.streams[sid] = st
    return st


def test_data_held_for_a_slow_client_goes_back_to_the_connection_window() -> None:
    """A paused stream's DATA is not acknowledged; if the stream ends so, the bytes must
    still be given back, or each abandoned download shrinks the window for good."""
    conn = Conn()
    stream(conn, unacked=700_000).close()
    assert ("ack", 5, 700_000) in conn.calls and conn.calls[-1] == ("flush",)
    assert 5 not in conn.streams


def test_a_response_that_ends_before_the_upload_resets_the_stream() -> None:
    """The server answered (a 401) while the request body was still going out: the stream
    is only half closed; without a reset it keeps one of the server's stream slots."""
    for state in ({"remaining": 99_000}, {"out": bytearray(b"x")}, {"chunked_out": True}, {"req_framer": object()}):
        conn = Conn()
        stream(conn, **state).close()
        assert conn.calls[0] == ("reset", 5, CANCEL), state


def test_a_finished_exchange_sends_no_reset() -> None:
    conn = Conn()
    stream(conn).close()
    assert not any(c[0] == "reset" for c in conn.calls) and not conn.streams


def test_the_last_stream_after_goaway_closes_the_connection() -> None:
    conn = Conn()
    conn.goaway = True
    first, second = stream(conn, sid=5), stream(conn, sid=7)
    first.close()
    assert not conn.closed
    second.close()
    assert conn.closed

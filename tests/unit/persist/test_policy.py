"""Persistence through the real frontend hooks (fake transports, no sockets): cookie
insert/rewrite/prefix, stick tables keyed on source, header and parameter,
redispatch and fail, and the response head switching from RAW to rebuilt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvs.persist.cookie import server_id
from pyvs.persist.policy import CookiePersistence
from pyvs.persist.store import LEARN, MOVE
from tests.unit.persist.rig import OK, Rig, config, set_cookies

SID = {f"s{i}": server_id("b", f"s{i}") for i in range(1, 4)}


@pytest.fixture()
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(request.param)
    yield r
    r.close()


def _rig(persistence: str, **kw: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("rig", [config(persistence, **kw)], indirect=True)  # type: ignore[arg-type]


# ---------------------------------------------------------------- cookie insert


@_rig("{type: cookie, name: SERVERID}")
def test_insert_sets_the_cookie_once_then_sticks(rig: Rig) -> None:
    fe, t = rig.client()
    server, fwd, resp = rig.get(fe, t)
    assert server == "s1"
    assert set_cookies(resp) == [b"SERVERID=" + SID["s1"].encode() + b"; path=/"]
    assert resp.endswith(b"\r\n\r\nok") and resp.startswith(b"HTTP/1.1 200 OK\r\n")
    # Round robin would move on to s2, s3: the cookie keeps the client on s1, silently.
    for _ in range(4):
        server, fwd, resp = rig.get(fe, t, headers=f"Cookie: a=1; SERVERID={SID['s1']}; b=2\r\n")
        assert server == "s1"
        assert set_cookies(resp) == []
        assert b"\r\nCookie: a=1; b=2\r\n" in fwd  # indirect: the server never sees it
    assert rig.persist.hits == 4 and rig.persist.misses == 1


@_rig("{type: cookie, name: SERVERID}")
def test_insert_indirect_removes_a_cookie_line_that_held_only_ours(rig: Rig) -> None:
    fe, t = rig.client()
    _, fwd, _ = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s2']}\r\nX-A: 1\r\n")
    assert b"ookie" not in fwd and b"\r\nX-A: 1\r\n" in fwd


@_rig("{type: cookie, name: SERVERID, indirect: false}")
def test_insert_without_indirect_forwards_the_cookie(rig: Rig) -> None:
    fe, t = rig.client()
    server, fwd, _ = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s3']}\r\n")
    assert server == "s3" and f"Cookie: SERVERID={SID['s3']}".encode() in fwd


@_rig("{type: cookie, name: SERVERID}")
def test_unknown_or_garbage_cookie_starts_a_new_session(rig: Rig) -> None:
    fe, t = rig.client()
    for bad in ("nope", "", "a|b", "\u00e9"):
        server, _, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={bad}\r\n")
        assert server is not None
        assert set_cookies(resp) == [f"SERVERID={SID[server]}; path=/".encode()]


@_rig("{type: cookie, name: SERVERID}")
def test_server_down_redispatches_and_re_sticks(rig: Rig) -> None:
    fe, t = rig.client()
    rig.set_eligible("s1", False)
    server, _, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s1']}\r\n")
    assert server in ("s2", "s3")
    assert set_cookies(resp) == [f"SERVERID={SID[server]}; path=/".encode()]
    assert rig.persist.redispatches == 1 and rig.rt.stats.redispatches == 1
    rig.set_eligible("s1", True)  # back: the client stays where it was moved
    again, _, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={SID[server]}\r\n")
    assert again == server and set_cookies(resp) == []


@_rig("{type: cookie, name: SERVERID, on_failure: fail}")
def test_fail_mode_answers_503_instead_of_moving_the_session(rig: Rig) -> None:
    fe, t = rig.client()
    rig.set_eligible("s2", False)
    server, _, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s2']}\r\n")
    assert server is None and resp.startswith(b"HTTP/1.1 503 ")
    assert rig.persist.failures == 1 and rig.persist.redispatches == 0


@_rig("{type: cookie, name: SERVERID}")
def test_weight_zero_keeps_existing_sessions(rig: Rig) -> None:
    s1 = rig.backend.by_name["s1"]
    rig.backend.apply(True, 0, s1)
    fe, t = rig.client()
    assert rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s1']}\r\n")[0] == "s1"
    assert {rig.get(*rig.client())[0] for _ in range(6)} == {"s2", "s3"}


@_rig("{type: cookie, name: SERVERID}")
def test_raw_response_is_rebuilt_to_carry_the_cookie(rig: Rig) -> None:
    resp_in = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nSet-Cookie: SERVERID=mine\r\n"
               b"Content-Length: 5\r\n\r\nhello")
    fe, t = rig.client()
    _, _, resp = rig.get(fe, t, response=resp_in)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert body == b"hello"
    assert b"Connection" not in head  # the raw head's keep-alive line is not carried over
    assert set_cookies(resp) == [f"SERVERID={SID['s1']}; path=/".encode()]  # the server's own one is gone
    # With a valid cookie nothing is added: the response goes out byte for byte.
    _, _, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s2']}\r\n",
                         response=b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    assert resp == b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"


@_rig("{type: cookie, name: SERVERID}")
def test_cookie_survives_a_rebuilt_head_for_http10_and_close(rig: Rig) -> None:
    fe, t = rig.client()
    rig.exchange(fe, t, b"GET / HTTP/1.0\r\n\r\n")
    fe, t = rig.client()
    _, _, resp = rig.exchange(fe, t, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = resp.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"Connection:") == 1 and b"Connection: close" in head
    assert len(set_cookies(resp)) == 1


@_rig("{type: cookie, name: SERVERID, httponly: true, secure: true, samesite: lax, domain: example.com, "
      "nocache: true}")
def test_insert_attributes_and_nocache(rig: Rig) -> None:
    fe, t = rig.client()
    _, _, resp = rig.get(fe, t, response=b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\n"
                                         b"Content-Length: 2\r\n\r\nok")
    assert set_cookies(resp) == [
        f"SERVERID={SID['s1']}; path=/; domain=example.com; SameSite=Lax; Secure; HttpOnly".encode()]
    head = resp.split(b"\r\n\r\n", 1)[0]
    assert b"Cache-Control: private" in head and b"public" not in head


@_rig("{type: cookie, name: SERVERID, maxidle: 1h, maxlife: 1d}")
def test_dated_cookie_refreshes_and_expires(rig: Rig) -> None:
    p = rig.persist
    assert isinstance(p, CookiePersistence)
    now = [1_800_000_000.0]
    p.wall_clock = lambda: now[0]
    fe, t = rig.client()
    _, _, resp = rig.get(fe, t)
    cookie = set_cookies(resp)[0].split(b";")[0].decode()
    assert cookie.count("|") == 2
    now[0] += 600  # 10 min later: valid, not re-issued (refresh after maxidle/4 = 15 min)
    assert rig.get(fe, t, headers=f"Cookie: {cookie}\r\n")[2].count(b"Set-Cookie") == 0
    now[0] += 600  # 20 min after issue: valid, re-issued with a new idle date, same first date
    server, _, resp = rig.get(fe, t, headers=f"Cookie: {cookie}\r\n")
    fresh = set_cookies(resp)[0].split(b";")[0].decode()
    assert server == "s1" and fresh != cookie and fresh.split("|")[2] == cookie.split("|")[2]
    now[0] += 3601  # idle for more than maxidle: a new session
    server, _, resp = rig.get(fe, t, headers=f"Cookie: {fresh}\r\n")
    assert set_cookies(resp) and p.misses == 2


# ---------------------------------------------------------------- rewrite, prefix


@_rig("{type: cookie, name: SERVERID, mode: rewrite}")
def test_rewrite_replaces_the_servers_value(rig: Rig) -> None:
    fe, t = rig.client()
    _, _, resp = rig.get(fe, t, response=b"HTTP/1.1 200 OK\r\nSet-Cookie: SERVERID=xyz; Path=/\r\n"
                                         b"Content-Length: 2\r\n\r\nok")
    assert set_cookies(resp) == [f"SERVERID={SID['s1']}; Path=/".encode()]
    server, fwd, resp = rig.get(fe, t, headers=f"Cookie: SERVERID={SID['s1']}\r\n")
    assert server == "s1" and set_cookies(resp) == [] and f"SERVERID={SID['s1']}".encode() in fwd


@_rig("{type: cookie, name: JSESSIONID, mode: prefix}")
def test_prefix_wraps_the_application_cookie(rig: Rig) -> None:
    fe, t = rig.client()
    _, _, resp = rig.get(fe, t, response=b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=abc123; HttpOnly\r\n"
                                         b"Content-Length: 2\r\n\r\nok")
    assert set_cookies(resp) == [f"JSESSIONID={SID['s1']}~abc123; HttpOnly".encode()]
    server, fwd, _ = rig.get(fe, t, headers=f"Cookie: x=1; JSESSIONID={SID['s1']}~abc123\r\n")
    assert server == "s1" and b"\r\nCookie: x=1; JSESSIONID=abc123\r\n" in fwd
    # A deletion from the server stays a deletion.
    _, _, resp = rig.get(fe, t, response=b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=; Max-Age=0\r\n"
                                         b"Content-Length: 2\r\n\r\nok")
    assert set_cookies(resp) == [b"JSESSIONID=; Max-Age=0"]


# ---------------------------------------------------------------- stick tables


@_rig("{type: source, timeout: 10m}")
def test_source_sticks_and_announces_once(rig: Rig) -> None:
    seen = {}
    for i in range(6):
        ip = f"10.0.0.{i}"
        seen[ip] = rig.get(*rig.client(ip))[0]
    assert len(set(seen.values())) == 3  # new clients are still balanced
    for _ in range(3):
        for ip, server in seen.items():
            assert rig.get(*rig.client(ip))[0] == server
    assert [e[2] for e in rig.table.outbox] == [LEARN] * 6  # hits are not re-announced before refresh
    rig.table.flush()
    assert rig.sent == [{"type": "stick", "backend": "b", "entries": rig.sent[0]["entries"]}]
    assert {k for k, _, _ in rig.sent[0]["entries"]} == set(seen)


@_rig("{type: source, ipv4_prefix: 24}")
def test_source_prefix_groups_a_network(rig: Rig) -> None:
    first = rig.get(*rig.client("192.0.2.10"))[0]
    assert {rig.get(*rig.client(f"192.0.2.{i}"))[0] for i in range(20, 30)} == {first}
    shared = rig.table.shared  # the worker's stick table lives in its shared zone
    assert shared is not None
    assert len(shared) == 1
    assert rig.backend.servers[shared.lookup("192.0.2.0/24", rig.loop.time())].name == first


@_rig("{type: source}")
def test_entries_from_the_supervisor_route_new_connections(rig: Rig) -> None:
    rig.table.on_sync([["10.9.9.9", "s3", 60.0]], rig.loop.time())
    assert rig.get(*rig.client("10.9.9.9"))[0] == "s3"


@_rig("{type: source}")
def test_source_redispatch_is_a_move(rig: Rig) -> None:
    server = rig.get(*rig.client("10.1.1.1"))[0]
    assert server is not None
    rig.set_eligible(server, False)
    moved = rig.get(*rig.client("10.1.1.1"))[0]
    assert moved not in (None, server)
    assert rig.table.outbox[-1] == ["10.1.1.1", moved, MOVE]
    shared = rig.table.shared
    assert shared is not None
    assert rig.backend.servers[shared.lookup("10.1.1.1", rig.loop.time())].name == moved


@_rig("{type: header, name: X-Api-Token}")
def test_header_key_learned_from_request_and_response(rig: Rig) -> None:
    a = rig.get(*rig.client(), headers="X-Api-Token: alpha\r\n")[0]
    for i in range(4):
        assert rig.get(*rig.client(f"10.0.0.{i}"), headers="x-api-token:  alpha \r\n")[0] == a
    # A token the server hands out in a response sticks to that server.
    issuer, _, _ = rig.get(*rig.client(), response=b"HTTP/1.1 200 OK\r\nX-Api-Token: beta\r\n"
                                                   b"Content-Length: 2\r\n\r\nok")
    assert all(rig.get(*rig.client(), headers="X-Api-Token: beta\r\n")[0] == issuer for _ in range(4))
    assert rig.table.learned_from_responses == 1
    keys = [e[0] for e in rig.table.outbox] + [e[0] for m in rig.sent for e in m.get("entries", [])]
    assert keys and not any("alpha" in k or "beta" in k for k in keys)  # tokens are hashed, never sent in clear


@_rig("{type: param, name: sid, response_header: X-Session}")
def test_param_key(rig: Rig) -> None:
    a = rig.get(*rig.client(), path="/cart?sid=abc&x=1")[0]
    assert all(rig.get(*rig.client(), path="/p?x=2&sid=abc")[0] == a for _ in range(4))
    assert rig.table.nokey == 0
    rig.get(*rig.client(), path="/nothing")
    assert rig.table.nokey == 1


@_rig("{type: source}")
def test_retry_on_another_server_re_sticks(rig: Rig) -> None:
    fe, t = rig.client("10.2.2.2")
    first = rig.get(fe, t)[0]
    assert first is not None
    fe2, t2 = rig.client("10.2.2.2")
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    fe2.data_received(head)
    up = fe2.ex.up
    assert up is not None and up.server.name == first
    rig.upstream[first].take()
    up.connection_lost(None)  # the pooled connection died before answering: retried elsewhere
    assert fe2.ex.up is not None and fe2.ex.up.server.name != first
    assert rig.persist.redispatches == 1
    fe2.ex.up.data_received(OK)
    assert t2.take().endswith(b"ok")


@pytest.mark.parametrize("rig", [config("{type: source}", servers=1)], indirect=True)
def test_retry_on_the_only_server_is_not_a_redispatch(rig: Rig) -> None:
    assert rig.get(*rig.client("10.3.3.3"))[0] == "s1"
    fe, _ = rig.client("10.3.3.3")
    fe.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert fe.ex.up is not None
    rig.upstream["s1"].take()
    rig._pool("s1")  # a second pooled connection for the retry
    fe.ex.up.connection_lost(None)  # retried, and the pool has nobody else
    assert fe.ex.up is not None and fe.ex.up.server.name == "s1"
    assert rig.persist.redispatches == 0 and rig.table.outbox[-1][2] == LEARN

"""Access-log lines: ECS JSON (valid, escaped, absent fields left out) and combined."""

from __future__ import annotations

import json
import os
import re

from pyvs.http.h1 import parse_request_head, parse_response_head
from pyvs.logs.formats import Clock, CombinedFormat, EcsFormat, Record


class _Named:
    def __init__(self, name: str, vhost: str | None = None) -> None:
        self.name = name
        self.vhost = vhost


class _Tls:
    def __init__(self, version: bytes) -> None:
        self.version = version


ROUTE, BACKEND, SERVER = _Named("home", "www"), _Named("web"), _Named("web1")


def _rec(head: bytes | None, status: int = 200, **kw: object) -> Record:
    rh = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/html\r\n\r\n",
                             head_request=False)
    req = parse_request_head(head) if head is not None else None
    values: dict[str, object] = dict(end=100.25, status=status, dur=0.0123, client=b"192.0.2.7", head=req,
                                     route=ROUTE, backend=BACKEND, server=SERVER, attempts=2,
                                     rbytes=len(rh.block) + 2 + 2, rhead=rh, rid=b"1f-2", term="", tls=None,
                                     queue=0.0, cache=b"", upstream=-1.0)
    values.update(kw)
    return tuple(values.values())  # type: ignore[return-value]


def _clock() -> Clock:
    c = Clock()
    c.offset = 1_700_000_000.0  # wall = loop + offset
    return c


def test_queue_wait_cache_status_and_upstream_time_are_logged_under_pyvs() -> None:
    head = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    doc = json.loads(EcsFormat("web").line(_rec(head, rid=b"", queue=0.25, cache=b"HIT"), _clock()))
    assert doc["pyvs"]["queue"] == {"duration": 250_000_000}
    assert doc["pyvs"]["cache"] == "HIT"
    # The server's own time (request sent -> response head), on the fast and the slow line alike.
    fast = json.loads(EcsFormat("web").line(_rec(head, rid=b"", upstream=0.004), _clock()))
    slow = json.loads(EcsFormat("web").line(_rec(head, upstream=0.004), _clock()))
    assert fast["pyvs"]["upstream"] == slow["pyvs"]["upstream"] == {"duration": 4_000_000}
    plain = json.loads(EcsFormat("web").line(_rec(head, rid=b""), _clock()))
    assert "queue" not in plain["pyvs"] and "cache" not in plain["pyvs"]


def test_ecs_line_names_the_fields_elastic_expects() -> None:
    head = (b"GET /shop/item?id=7&x=1 HTTP/1.1\r\nHost: www.example.com:8080\r\nUser-Agent: Mozilla/5.0\r\n"
            b"Referer: https://example.com/\r\n\r\n")
    line = EcsFormat("web").line(_rec(head), _clock())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert doc["@timestamp"] == "2023-11-14T22:15:00.250Z"
    assert doc["client"]["ip"] == "192.0.2.7"
    assert doc["http"]["request"] == {"method": "GET", "referrer": "https://example.com/"}
    assert doc["http"]["response"] == {"status_code": 200, "body": {"bytes": 2}}
    assert doc["url"] == {"path": "/shop/item", "query": "id=7&x=1", "domain": "www.example.com"}
    assert doc["user_agent"] == {"original": "Mozilla/5.0"}
    assert doc["event"]["duration"] == 12_300_000  # nanoseconds
    assert doc["process"]["pid"] == os.getpid()
    assert doc["pyvs"] == {"listener": "web", "vhost": "www", "route": "home", "backend": "web",
                           "server": "web1", "retries": 1, "request_id": "1f-2"}


def test_ecs_names_the_tls_version() -> None:
    doc = json.loads(EcsFormat("web").line(_rec(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", tls=_Tls(b"TLSv1.3")), _clock()))
    assert doc["tls"] == {"version": "1.3", "version_protocol": "tls"}


def test_ecs_escapes_quotes_control_and_non_utf8_bytes() -> None:
    head = b'GET /a"b\\c HTTP/1.1\r\nHost: x\r\nUser-Agent: evil"\t\xff\xfe}\r\n\r\n'
    doc = json.loads(EcsFormat("w\"eb").line(_rec(head), _clock()))
    assert doc["url"]["path"] == 'a"b\\c'.join(("/", ""))
    assert doc["user_agent"]["original"] == 'evil"\t\ufffd\ufffd}'
    assert doc["pyvs"]["listener"] == 'w"eb'


def test_ecs_leaves_out_what_a_request_never_had() -> None:
    doc = json.loads(EcsFormat("web").line(
        _rec(None, 400, rhead=None, rbytes=0, rid=b"", term="bad_request"), _clock()))
    assert "url" not in doc and "user_agent" not in doc and "request" not in doc["http"]
    assert doc["http"]["response"]["status_code"] == 400
    assert doc["pyvs"] == {"listener": "web", "retries": 0, "termination": "bad_request"}


def test_combined_format_is_what_log_tools_parse() -> None:
    head = b"POST /form HTTP/1.0\r\nHost: x\r\nReferer: http://r/\r\nUser-Agent: curl/8\r\n\r\n"
    line = CombinedFormat("web").line(_rec(head), _clock())
    m = re.fullmatch(rb'(\S+) - - \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"\n', line)
    assert m is not None, line
    assert m.groups() == (b"192.0.2.7", b"14/Nov/2023:22:15:00 +0000", b"POST /form HTTP/1.0", b"200", b"2",
                          b"http://r/", b"curl/8")
    bad = CombinedFormat("web").line(_rec(None, 408, rhead=None, rbytes=0), _clock())
    assert b'"-" 408 0 "-" "-"\n' in bad


def _leaves(doc: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in doc.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}  # type: ignore[arg-type]
    return out


def test_the_documented_index_template_maps_every_field_a_line_has() -> None:
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[3] / "docs" / "logging.md").read_text()
    template = json.loads(re.search(r"### Elasticsearch index template.*?```json\n(.*?)```", text, re.S)[1])  # type: ignore[index]
    filebeat = yaml.safe_load(re.search(r"### Filebeat.*?```yaml\n(.*?)```", text, re.S)[1])  # type: ignore[index]
    assert filebeat["filebeat.inputs"][0]["parsers"][0]["ndjson"]["target"] == ""

    def mapped(props: dict[str, object], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in props.items():
            sub = v.get("properties") if isinstance(v, dict) else None
            out |= mapped(sub, f"{prefix}{k}.") if sub else {prefix + k}
        return out

    fields = mapped(template["template"]["mappings"]["properties"])
    head = (b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nReferer: r\r\n\r\n")
    full = json.loads(EcsFormat("web").line(_rec(head, tls=_Tls(b"TLSv1.2"), term="aborted"), _clock()))
    assert _leaves(full) <= fields, _leaves(full) - fields


def test_combined_escapes_as_nginx_does() -> None:
    head = b'GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: a"b\\c\xff\r\n\r\n'
    line = CombinedFormat("web").line(_rec(head), _clock())
    assert line.endswith(b'"a\\x22b\\x5Cc\\xFF"\n')


def test_the_fast_path_writes_what_the_general_path_writes() -> None:
    heads = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: www.example.com\r\nuser-AGENT:  Mozilla/5.0 (X11) \r\n"
        b"REFERER: http://x/?q\r\nAccept: */*\r\n\r\n",
        b"HEAD /only? HTTP/1.0\r\n\r\n",
        b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent:\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nHost: [::1]\r\nX-UA: User-Agent: no\r\n\r\n",
    ]
    fmt = EcsFormat("web")
    for head in heads:
        for attempts in (0, 1, 3):
            rec = _rec(head, rid=b"", attempts=attempts)
            fast, general = fmt.line(rec, _clock()), fmt._line(rec, _clock())
            assert json.loads(fast) == json.loads(general), (fast, general)

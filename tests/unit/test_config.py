"""Config loading without sockets: units, schema errors with their paths, the CLI front end.

Every error test asserts the exact ``"path: reason"`` text that ``pyvs check`` prints,
because that text is the user-facing contract (DESIGN.md, "Configuration contract").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pyvs import __version__
from pyvs.cli import main
from pyvs.config.loader import ConfigError, default_text, load_default, load_file, load_text
from pyvs.config.schema import Config, parse_address
from pyvs.config.units import format_duration, parse_duration, parse_size

BACKEND = """\
backends:
  - name: app
    servers:
      - {name: app1, address: "127.0.0.1:9001"}
      - {name: app2, address: "127.0.0.1:9002"}
"""

GOOD = (
    """\
listeners:
  - name: web
    bind: ["127.0.0.1:8080"]
    backend: app
"""
    + BACKEND
)


def problems(text: str) -> list[str]:
    """The problems a config text produces (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return info.value.problems


def one_listener(extra: str) -> str:
    """A valid config whose single listener gets ``extra`` (YAML flow-mapping items) added."""
    return f'listeners:\n  - {{name: web, bind: ["127.0.0.1:8080"], backend: app, {extra}}}\n' + BACKEND


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("150ms", 0.15),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("500us", 0.0005),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h2m3s", 3723.0),
        (" 2S ", 2.0),
        ("2", 2.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("0s", 0.0),
        ("0ms", 0.0),
        (2, 2.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_duration_parses(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["2x", "", "s", "ms", "-1s", "2 s", "1m 30s", "2sec", "1.s", "s2", "two", -1, -0.5, True, None, [1], {"s": 1}],
)
def test_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(2.0, "2s"), (0.15, "150ms"), (90.0, "90s"), (0.0, "0s")])
def test_duration_formats_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_duration_in_config_and_its_error_path() -> None:
    cfg = load_text("global: {grace: 1m30s, stats_interval: 250ms}\n")
    assert cfg.global_.grace == 90.0
    assert cfg.global_.stats_interval == pytest.approx(0.25)
    assert problems("global: {grace: 10 seconds}\n") == [
        "global.grace: expected a duration like 2s, 150ms or 1m30s, got '10 seconds'"
    ]
    assert problems("global: {stats_interval: 0}\n") == ["global.stats_interval: Input should be greater than 0"]


def test_duration_keys_everywhere_accept_units() -> None:
    text = (
        'listeners:\n  - {name: web, bind: ["127.0.0.1:8080"], backend: app, timeouts: {client: 2m, request: 5s}}\n'
        "backends:\n  - name: app\n    timeouts: {connect: 150ms, server: 1m, total: 0}\n"
        "    pool: {idle_timeout: 1m30s}\n"
        '    servers: [{name: a, address: "127.0.0.1:9001"}]\n'
    )
    cfg = load_text(text)
    assert (cfg.listeners[0].timeouts.client, cfg.listeners[0].timeouts.request) == (120.0, 5.0)
    b = cfg.backends[0]
    assert b.timeouts.connect == pytest.approx(0.15)
    assert (b.timeouts.server, b.timeouts.total) == (60.0, 0.0)
    assert b.pool.idle_timeout == 90.0
    assert problems(one_listener("timeouts: {client: 0s}")) == [
        "listeners[0].timeouts.client: Input should be greater than 0"
    ]


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64k", 65536),
        ("64K", 65536),
        ("64kb", 65536),
        ("64KiB", 65536),
        ("10m", 10 * 1024**2),
        ("1g", 1024**3),
        ("512", 512),
        ("512b", 512),
        (" 8 k ", 8192),
        ("0", 0),
        (512, 512),
        (0, 0),
    ],
)
def test_size_parses(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1.5k", "-1", "10x", "", "k", "64kk", "1t", -1, 1.5, True, None, [64]])
def test_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_size_in_config_and_its_error_path() -> None:
    assert load_text(one_listener("max_header_size: 16k")).listeners[0].max_header_size == 16384
    assert problems(one_listener("max_header_size: 1.5k")) == [
        "listeners[0].max_header_size: expected a size like 64k or 10m, got '1.5k'"
    ]
    assert problems(one_listener("max_header_size: 512")) == [
        "listeners[0].max_header_size: Input should be greater than or equal to 1024"
    ]


# ---------------------------------------------------------------- unknown keys


def test_unknown_key_in_a_listener_names_its_path() -> None:
    assert problems(one_listener("foo: 1")) == ["listeners[0].foo: unknown key"]


def test_unknown_key_deep_inside() -> None:
    text = (
        'listeners:\n  - name: web\n    bind: ["127.0.0.1:8080"]\n'
        "    routes: [{match: {hots: example.com}, backend: app}]\n" + BACKEND
    )
    assert problems(text) == ["listeners[0].routes[0].match.hots: unknown key"]


def test_contract_sections_are_accepted() -> None:
    cfg = load_text(GOOD + "state: {redis: 'redis://127.0.0.1:6379/0'}\nvrrp: []\n")
    assert cfg.state.redis == "redis://127.0.0.1:6379/0" and cfg.vrrp == []


def test_persistence_is_accepted() -> None:
    text = GOOD.replace("  - name: app\n", "  - name: app\n    persistence: {type: source}\n")
    p = load_text(text).backends[0].persistence  # its errors: tests/unit/persist/test_schema.py
    assert p is not None and p.type == "source"


@pytest.mark.parametrize("mode", ["tcp", "udp"])
def test_l4_modes_take_a_backend_not_routes(mode: str) -> None:
    text = one_listener(f"mode: {mode}, routes: [{{backend: app}}]")
    assert any("routes" in p for p in problems(text))


def test_unknown_mode_lists_the_choices() -> None:
    assert problems(one_listener("mode: https")) == ["listeners[0].mode: Input should be 'http', 'tcp', 'udp' or 'dns'"]


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("localhost:8080", ("localhost", 8080)),
        ("[::1]:443", ("::1", 443)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("example.com:65535", ("example.com", 65535)),
    ],
)
def test_parse_address(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "::1:80", ":80", "host:", "host:http", "host:65536", "host:-1", "[::1:80", "[zz]:80"]
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_bad_server_address_names_its_path() -> None:
    text = GOOD.replace('address: "127.0.0.1:9001"', 'address: "nope"')
    assert problems(text) == ["backends[0].servers[0].address: expected host:port, got 'nope'"]


def test_ipv6_without_brackets_says_how_to_write_it() -> None:
    text = GOOD.replace('address: "127.0.0.1:9002"', 'address: "::1:9002"')
    assert problems(text) == [
        "backends[0].servers[1].address: expected host:port (IPv6 addresses go in brackets: [::1]:80), got '::1:9002'"
    ]


def test_other_addresses_are_checked_too() -> None:
    assert problems(GOOD.replace('bind: ["127.0.0.1:8080"]', 'bind: ["127.0.0.1:8080", "8081"]')) == [
        "listeners[0].bind: expected host:port, got '8081'"
    ]
    assert problems("admin: {listen: 'localhost'}\n") == ["admin.listen: expected host:port, got 'localhost'"]
    assert problems("demo: {servers: [{name: d, listen: 'x:y'}]}\n") == [
        "demo.servers[0].listen: expected host:port with a port 0-65535, got 'x:y'"
    ]
    assert problems(one_listener("bind: []")) == [
        "listeners[0].bind: List should have at least 1 item after validation, not 0"
    ]


def test_admin_can_be_disabled() -> None:
    assert load_text("admin: {listen: null}\n").admin.listen is None
    assert load_text("").admin.listen == "127.0.0.1:9090"


def test_trusted_proxies_must_be_cidrs() -> None:
    cfg = load_text(one_listener("forwarded: {trusted_proxies: ['10.0.0.0/8', '192.168.1.1', '::1/128']}"))
    assert cfg.listeners[0].forwarded.trusted_proxies == ["10.0.0.0/8", "192.168.1.1", "::1/128"]
    assert problems(one_listener("forwarded: {trusted_proxies: [lan]}")) == [
        "listeners[0].forwarded.trusted_proxies: expected a CIDR like 10.0.0.0/8, got 'lan'"
    ]


# ---------------------------------------------------------------- references and names


def test_unknown_backend_reference_names_the_listener_key() -> None:
    assert problems(GOOD.replace("backend: app", "backend: api")) == ["listeners[0].backend: no backend named 'api'"]


def test_unknown_backend_in_a_route_names_the_route() -> None:
    text = (
        'listeners:\n  - name: web\n    bind: ["127.0.0.1:8080"]\n    routes:\n'
        "      - {match: {path_prefix: /v1/}, backend: app}\n      - {backend: static}\n" + BACKEND
    )
    assert problems(text) == ["listeners[0].routes[1].backend: no backend named 'static'"]


def test_listener_needs_a_backend_or_routes() -> None:
    text = 'listeners:\n  - {name: web, bind: ["127.0.0.1:8080"]}\n' + BACKEND
    assert problems(text) == ["listeners[0]: needs a backend or routes"]


def test_routes_alone_are_enough() -> None:
    text = (
        'listeners:\n  - name: web\n    bind: ["127.0.0.1:8080"]\n'
        "    routes: [{match: {host: api.example.com}, backend: app}, {backend: app}]\n" + BACKEND
    )
    routes = load_text(text).listeners[0].routes
    assert routes[0].match is not None and routes[0].match.host == "api.example.com"
    assert routes[1].match is None


def test_duplicate_backend_names() -> None:
    text = GOOD + '  - name: app\n    servers: [{name: x, address: "127.0.0.1:9003"}]\n'
    assert problems(text) == ["backends: name 'app' is used twice"]


def test_duplicate_listener_names() -> None:
    text = GOOD.replace("backends:", '  - {name: web, bind: ["127.0.0.1:8081"], backend: app}\nbackends:')
    assert problems(text) == ["listeners: name 'web' is used twice"]


def test_duplicate_server_names() -> None:
    text = GOOD.replace("name: app2", "name: app1")
    assert problems(text) == ["backends[0].servers: server name 'app1' is used twice"]


def test_same_bind_address_in_two_listeners() -> None:
    text = GOOD.replace("backends:", '  - {name: other, bind: ["127.0.0.1:8080"], backend: app}\nbackends:')
    assert problems(text) == ["listeners[1].bind: 127.0.0.1:8080 is also bound by listener 'web'"]


def test_backend_needs_servers() -> None:
    assert problems("backends:\n  - {name: app, servers: []}\n") == [
        "backends[0].servers: List should have at least 1 item after validation, not 0"
    ]


# ---------------------------------------------------------------- balance


def test_unknown_balance_algorithm_lists_the_known_ones() -> None:
    [problem] = problems(GOOD.replace("  - name: app\n", "  - name: app\n    balance: fastest\n"))
    assert problem.startswith("backends[0].balance: unknown algorithm 'fastest'; known: ")
    known = problem.split("known: ", 1)[1].split(", ")
    assert {"roundrobin", "static-rr", "leastconn", "maglev", "peak-ewma"} <= set(known)
    assert known == sorted(known)


@pytest.mark.parametrize(
    "spec",
    ["roundrobin", "static-rr", "leastconn", "p2c", "peak-ewma", "source", "uri", "header(X-User)", "cookie(SRV)"],
)
def test_known_balance_specs_are_accepted(spec: str) -> None:
    cfg = load_text(GOOD.replace("  - name: app\n", f'  - name: app\n    balance: "{spec}"\n'))
    assert cfg.backends[0].balance == spec


def test_malformed_balance_spec() -> None:
    assert problems(GOOD.replace("  - name: app\n", '  - name: app\n    balance: "header(X-User"\n')) == [
        "backends[0].balance: malformed balance spec 'header(X-User'"
    ]


def test_hash_type_choices() -> None:
    cfg = load_text(GOOD.replace("  - name: app\n", "  - name: app\n    hash_type: consistent\n"))
    assert cfg.backends[0].hash_type == "consistent"
    assert problems(GOOD.replace("  - name: app\n", "  - name: app\n    hash_type: ring\n")) == [
        "backends[0].hash_type: Input should be 'map', 'consistent' or 'maglev'"
    ]


@pytest.mark.parametrize("spec", ["header", "roundrobin(x)"])
def test_balance_argument_is_checked_by_pyvs_check(spec: str) -> None:
    found = problems(GOOD.replace("  - name: app\n", f'  - name: app\n    balance: "{spec}"\n'))
    assert len(found) == 1 and found[0].startswith("backends[0]: balance: ")


# ---------------------------------------------------------------- other limits


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("global: {workers: -1}", "global.workers: Input should be greater than or equal to 0"),
        ("global: {workers: 257}", "global.workers: Input should be less than or equal to 256"),
        ("global: {log_level: verbose}", "global.log_level: Input should be 'debug', 'info', 'warning' or 'error'"),
        (
            "global: {workers: two}",
            "global.workers: Input should be a valid integer, unable to parse string as an integer",
        ),
        ("admin: {listen: 9090}", "admin.listen: Input should be a valid string"),
        ("listeners: {name: web}", "listeners: Input should be a valid list"),
    ],
)
def test_value_errors_name_their_path(snippet: str, problem: str) -> None:
    assert problems(snippet + "\n") == [problem]


def test_server_weight_limits() -> None:
    assert problems(GOOD.replace('address: "127.0.0.1:9001"', 'address: "127.0.0.1:9001", weight: 500')) == [
        "backends[0].servers[0].weight: Input should be less than or equal to 256"
    ]
    cfg = load_text(GOOD.replace('address: "127.0.0.1:9001"', 'address: "127.0.0.1:9001", weight: 0, backup: true'))
    assert (cfg.backends[0].servers[0].weight, cfg.backends[0].servers[0].backup) == (0, True)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "global: {workers: -1, grace: soon}\n"
        'listeners:\n  - {name: web, bind: ["127.0.0.1:8080"], backend: app, color: red}\n'
        'backends:\n  - {name: app, balance: fastest, servers: [{name: a, address: "x"}]}\n'
    )
    got = problems(text)
    assert [p.split(":", 1)[0] for p in got] == [
        "global.workers",
        "global.grace",
        "listeners[0].color",
        "backends[0].balance",
        "backends[0].servers[0].address",
    ]


# ---------------------------------------------------------------- YAML and files


def test_invalid_yaml_reports_line_and_column() -> None:
    text = "listeners:\n  - name: web\n   bind: x\n"
    [problem] = problems(text)
    assert problem.startswith("line 3, column 4: invalid YAML: ")


def test_unclosed_bracket_reports_where() -> None:
    text = 'listeners:\n  - name: web\n    bind: ["127.0.0.1:8080"\n    backend: app\n'
    [problem] = problems(text)
    assert problem == "line 4, column 5: invalid YAML: expected ',' or ']', but got '<scalar>'"


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- listeners\n") == ["(top level): expected a mapping of sections"]


def test_empty_file_is_all_defaults() -> None:
    cfg = load_text("")
    assert cfg == Config()
    assert (cfg.listeners, cfg.backends, cfg.global_.workers) == ([], [], 0)


def test_global_section_uses_the_key_global() -> None:
    assert load_text("global: {workers: 3}\n").global_.workers == 3


def test_config_is_frozen() -> None:
    cfg = load_text(GOOD)
    with pytest.raises(ValueError):
        cfg.listeners[0].backlog = 5  # type: ignore[misc]


def test_error_carries_source(tmp_path: Path) -> None:
    p = tmp_path / "lb.yaml"
    p.write_text(GOOD.replace("backend: app", "backend: api"))
    with pytest.raises(ConfigError) as info:
        load_file(p)
    assert info.value.source == str(p)
    assert str(info.value) == f"{p}: listeners[0].backend: no backend named 'api'"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "nope.yaml")
    assert info.value.problems == ["cannot read: No such file or directory"]


# ---------------------------------------------------------------- the embedded default


def test_embedded_default_is_valid() -> None:
    cfg = load_default()
    assert [(lst.name, lst.mode, lst.bind, lst.backend) for lst in cfg.listeners] == [
        ("web", "http", ["127.0.0.1:8080"], "demo")
    ]
    assert cfg.admin.listen == "127.0.0.1:9090"
    # The demo servers pyvs starts are exactly the servers the demo backend balances over.
    assert [s.listen for s in cfg.demo.servers] == [s.address for s in cfg.backends[0].servers]
    assert cfg.backends[0].balance == "roundrobin"


def test_embedded_default_is_plain_yaml() -> None:
    data = yaml.safe_load(default_text())
    assert set(data) == {"global", "admin", "demo", "listeners", "backends"}


def test_design_contract_example_keys_that_exist_validate() -> None:
    # The parts of the DESIGN.md example that are implemented, verbatim.
    text = """\
global:
  workers: 2
admin:
  listen: 127.0.0.1:9090
listeners:
  - name: web
    mode: http
    bind: ["127.0.0.1:8080"]
    routes:
      - match: {host: "api.example.com", path_prefix: "/v1/"}
        backend: api
      - backend: web
backends:
  - name: web
    balance: roundrobin
    hash_type: consistent
    servers:
      - {name: web1, address: "127.0.0.1:9001", weight: 3}
      - {name: web2, address: "127.0.0.1:9002", weight: 1}
      - {name: sorry, address: "127.0.0.1:9009", backup: true}
  - name: api
    servers: [{name: api1, address: "127.0.0.1:9003"}]
"""
    cfg = load_text(text)
    assert [s.weight for s in cfg.backends[0].servers] == [3, 1, 1]


# ---------------------------------------------------------------- known bugs (xfail until fixed)


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_duration_rejects_nan_and_inf(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_schema_allows_duration_strings() -> None:
    grace = Config.model_json_schema(by_alias=True)["$defs"]["GlobalConfig"]["properties"]["grace"]
    assert grace.get("type") != "number"


def test_every_bad_reference_is_reported() -> None:
    text = (
        "listeners:\n"
        '  - {name: a, bind: ["127.0.0.1:8080"], backend: x}\n'
        '  - {name: b, bind: ["127.0.0.1:8081"], backend: y}\n' + BACKEND
    )
    assert len(problems(text)) == 2


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_check_bad_file_prints_each_problem_on_its_own_line(runner: CliRunner, tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        "global:\n  grace: 10 seconds\n"
        'listeners:\n  - {name: web, bind: ["127.0.0.1:8080"], backend: app, timeout: 5s}\n'
        'backends:\n  - {name: app, servers: [{name: a, address: "127.0.0.1"}]}\n'
    )
    result = runner.invoke(main, ["check", "-c", str(p)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{p}: 3 error(s)",
        "  global.grace: expected a duration like 2s, 150ms or 1m30s, got '10 seconds'",
        "  listeners[0].timeout: unknown key",
        "  backends[0].servers[0].address: expected host:port, got '127.0.0.1'",
    ]


def test_check_bad_reference(runner: CliRunner, tmp_path: Path) -> None:
    p = tmp_path / "ref.yaml"
    p.write_text(GOOD.replace("backend: app", "backend: api"))
    result = runner.invoke(main, ["check", "-c", str(p)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{p}: 1 error(s)", "  listeners[0].backend: no backend named 'api'"]


def test_check_invalid_yaml(runner: CliRunner, tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("listeners: [\n")
    result = runner.invoke(main, ["check", "-c", str(p)])
    assert result.exit_code == 1
    assert result.output.splitlines()[1].startswith("  line 2, column 1: invalid YAML: ")


def test_check_good_file(runner: CliRunner, tmp_path: Path) -> None:
    p = tmp_path / "good.yaml"
    p.write_text(GOOD)
    result = runner.invoke(main, ["check", "-c", str(p)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{p}: OK (1 listener(s), 1 backend(s), 2 server(s))\n"


def test_check_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["check", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read: No such file or directory" in result.output


def test_check_needs_a_file(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check"])
    assert result.exit_code == 2
    assert "-c" in result.output


def test_config_default_prints_a_valid_config(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["config", "default"])
    assert result.exit_code == 0
    assert result.output == default_text()
    p = tmp_path / "default.yaml"
    p.write_text(result.output)
    assert runner.invoke(main, ["check", "-c", str(p)]).exit_code == 0


def test_config_schema_is_json_with_the_sections(runner: CliRunner) -> None:
    result = runner.invoke(main, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    props = schema["properties"]
    assert "listeners" in props
    assert props["listeners"]["type"] == "array"
    assert set(props) == {"global", "admin", "demo", "listeners", "backends", "state", "vrrp", "pageviews"}
    assert schema["additionalProperties"] is False
    listener = schema["$defs"]["Listener"]
    assert listener["additionalProperties"] is False
    assert {"name", "mode", "bind", "backend", "routes", "forwarded", "timeouts"} <= set(listener["properties"])
    # Every property carries the description the reference is built around.
    for name, model in schema["$defs"].items():
        for key, prop in model["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version"])
    assert result.exit_code == 0
    assert result.output == f"pyvs {__version__}\n"

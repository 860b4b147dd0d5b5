"""The admin endpoint's exposure rules: off loopback a token file is required, and a
token file pyvs cannot use is refused at load with the key in the message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyvs.cli import main
from pyvs.config.loader import ConfigError, load_text
from pyvs.config.schema import AdminConfig

REQUIRED = "admin.token_file: required when admin.listen is not a loopback address"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return info.value.problems


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "admin.token"
    p.write_text("  s3cret-Token_1\n\n")
    p.chmod(0o600)
    return p


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:9090", "127.3.4.5:9090", "[::1]:9090", "localhost:9090", "LocalHost.:9090", "[::ffff:127.0.0.1]:9090"],
)
def test_loopback_needs_no_token(listen: str) -> None:
    cfg = load_text(f"admin: {{listen: '{listen}'}}\n")
    assert cfg.admin.token_file is None
    assert cfg.admin.token() is None


def test_default_and_disabled_admin_need_no_token() -> None:
    assert load_text("").admin.token_file is None
    assert load_text("admin: {listen: null}\n").admin.listen is None


@pytest.mark.parametrize(
    "listen",
    ["0.0.0.0:9090", "[::]:9090", "10.0.0.5:9090", "192.0.2.7:9090", "[2001:db8::1]:9090", "admin.internal:9090",
     "[::ffff:10.0.0.1]:9090"],
)
def test_non_loopback_without_token_file_is_refused(listen: str) -> None:
    assert problems(f"admin: {{listen: '{listen}'}}\n") == [REQUIRED]


@pytest.mark.parametrize("listen", ["0.0.0.0:9090", "[::]:9090", "127.0.0.1:9090"])
def test_token_file_is_accepted_anywhere_and_stripped(listen: str, token_file: Path) -> None:
    cfg = load_text(f"admin: {{listen: '{listen}', token_file: '{token_file}'}}\n")
    assert cfg.admin.token_file == str(token_file)
    assert cfg.admin.token() == b"s3cret-Token_1"


def test_invalid_listen_reports_only_the_listen_error() -> None:
    assert problems("admin: {listen: 'nope'}\n") == ["admin.listen: expected host:port, got 'nope'"]


def test_missing_token_file_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert problems(f"admin: {{listen: '0.0.0.0:9090', token_file: '{missing}'}}\n") == [
        f"admin.token_file: cannot read {missing}: No such file or directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_token_file_names_the_key(token_file: Path) -> None:
    token_file.chmod(0)
    assert problems(f"admin: {{token_file: '{token_file}'}}\n") == [
        f"admin.token_file: cannot read {token_file}: Permission denied"
    ]


def test_a_directory_is_not_a_token_file(tmp_path: Path) -> None:
    [msg] = problems(f"admin: {{token_file: '{tmp_path}'}}\n")
    assert msg.startswith(f"admin.token_file: cannot read {tmp_path}: ")


@pytest.mark.parametrize("content", ["", "\n", "  \t\n "])
def test_empty_token_file_names_the_key(tmp_path: Path, content: str) -> None:
    p = tmp_path / "empty.token"
    p.write_text(content)
    assert problems(f"admin: {{listen: '[::]:9090', token_file: '{p}'}}\n") == [
        f"admin.token_file: {p} is empty; it must hold the admin token"
    ]


@pytest.mark.parametrize("content", ["two words", "tab\tinside", "caf\u00e9", "ctl\x01"])
def test_token_that_cannot_travel_in_a_header_is_refused(tmp_path: Path, content: str) -> None:
    p = tmp_path / "bad.token"
    p.write_bytes(content.encode())
    assert problems(f"admin: {{token_file: '{p}'}}\n") == [
        f"admin.token_file: the token in {p} must be printable ASCII without spaces"
    ]


def test_huge_token_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "huge.token"
    p.write_bytes(b"a" * 70000)
    assert problems(f"admin: {{token_file: '{p}'}}\n") == [
        f"admin.token_file: {p} is larger than 64 KiB; it should hold only the token"
    ]


def test_token_read_at_start_names_the_key(token_file: Path) -> None:
    cfg = load_text(f"admin: {{token_file: '{token_file}'}}\n")
    token_file.write_text("\n")  # emptied between load and start
    with pytest.raises(ValueError, match=r"^admin\.token_file: .* is empty"):
        cfg.admin.token()
    token_file.unlink()
    with pytest.raises(ValueError, match=r"^admin\.token_file: cannot read "):
        cfg.admin.token()


def test_is_loopback() -> None:
    assert AdminConfig.is_loopback("127.0.0.1:1")
    assert AdminConfig.is_loopback("[::1]:1")
    assert not AdminConfig.is_loopback("[::]:1")
    assert not AdminConfig.is_loopback("0.0.0.0:1")
    assert not AdminConfig.is_loopback("localhost.example:1")


def test_pyvs_check_refuses_public_admin_without_token(tmp_path: Path) -> None:
    cfg = tmp_path / "pyvs.yaml"
    cfg.write_text("admin: {listen: '0.0.0.0:9090'}\n")
    res = CliRunner().invoke(main, ["check", "-c", str(cfg)])
    assert res.exit_code == 1
    assert REQUIRED in res.output


def test_pyvs_check_accepts_public_admin_with_token(tmp_path: Path, token_file: Path) -> None:
    cfg = tmp_path / "pyvs.yaml"
    cfg.write_text(f"admin: {{listen: '0.0.0.0:9090', token_file: '{token_file}'}}\n")
    res = CliRunner().invoke(main, ["check", "-c", str(cfg)])
    assert res.exit_code == 0, res.output

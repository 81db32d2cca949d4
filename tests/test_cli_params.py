"""CLI parameter parsing: K=V pairs and secrets read from the environment."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from deploystream.cli.params import HOST_SPEC, KEY_VALUE, SECRET_VALUE
from tests.harness import deployctl


def test_key_value_pairs() -> None:
    assert KEY_VALUE.convert("A=b=c", None, None) == ("A", "b=c")
    assert KEY_VALUE.convert("A=", None, None) == ("A", "")
    for bad in ("A", "=x", "1A=x", "A-B=x"):
        with pytest.raises(click.BadParameter):
            KEY_VALUE.convert(bad, None, None)


def test_secret_by_name_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "from-env-value")
    assert SECRET_VALUE.convert("DB_PASSWORD", None, None) == ("DB_PASSWORD", "from-env-value")
    assert SECRET_VALUE.convert("DB_PASSWORD=inline", None, None) == ("DB_PASSWORD", "inline")
    monkeypatch.delenv("DB_PASSWORD")
    with pytest.raises(click.BadParameter, match="no environment variable DB_PASSWORD"):
        SECRET_VALUE.convert("DB_PASSWORD", None, None)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("h1", ("h1", 22, None)),
        ("deploy@198.18.0.2", ("198.18.0.2", 22, "deploy")),
        ("deploy@web-1.example.com:2222", ("web-1.example.com", 2222, "deploy")),
        ("[::1]:2200", ("::1", 2200, None)),
        ("fe80::1", ("fe80::1", 22, None)),
    ],
)
def test_host_spec_parses_user_host_port(value: str, parsed: tuple[str, int, str | None]) -> None:
    assert HOST_SPEC.convert(value, None, None) == parsed


@pytest.mark.parametrize("value", ["@h", "h:0", "h:70000", "h:x", "u@", "[::1]:y"])
def test_host_spec_refuses_what_is_not_user_host_port(value: str) -> None:
    with pytest.raises(click.BadParameter, match="USER@"):
        HOST_SPEC.convert(value, None, None)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--host", "h1", "--host", "bad_host!"], "--host: 'bad_host!' is not allowed"),
        (["--host", "Bad-User@h1"], "--host: 'Bad-User' is not allowed"),
        (["--host", "h1:99999"], "--host"),
        (["--serial", "0"], "--serial: '0' is not allowed"),
        (["--max-fail-percent", "101"], "--max-fail-percent"),
    ],
)
def test_bad_hosts_and_rollout_options_exit_2_naming_the_option(
    extra: list[str], fragment: str, tmp_path: Path
) -> None:
    out = deployctl(
        "deploy", "--project", "p", "--repo", "owner/name", "--service-port", "8000", *extra,
        redis_url="redis://127.0.0.1:1/0", keys_dir=tmp_path / "keys",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr and "Traceback" not in out.stderr

"""CLI parameter parsing: K=V pairs and secrets read from the environment."""

from __future__ import annotations

import click
import pytest

from deploystream.cli.params import KEY_VALUE, SECRET_VALUE


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

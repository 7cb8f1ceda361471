"""Secrets come from NAME or NAME_FILE, never both, and errors never show the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinedb import secrets


def test_plain_variable() -> None:
    assert secrets.from_env("STOMP_URL", {"STOMP_URL": "stomp://h"}) == "stomp://h"
    assert secrets.from_env("STOMP_URL", {}) is None
    assert secrets.from_env("STOMP_URL", {"STOMP_URL": ""}) is None


def test_file_variable_strips_the_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("postgresql://u:s3cret@h/db\n")
    env = {"DATABASE_URL_FILE": str(path)}
    assert secrets.from_env("DATABASE_URL", env) == "postgresql://u:s3cret@h/db"


def test_both_set_is_an_error() -> None:
    with pytest.raises(secrets.SecretError, match="not both") as raised:
        secrets.from_env(
            "DATABASE_URL", {"DATABASE_URL": "postgresql://u:pw@h/db", "DATABASE_URL_FILE": "/x"}
        )
    assert "pw" not in str(raised.value)


def test_unreadable_file_names_the_path_not_a_value(tmp_path: Path) -> None:
    with pytest.raises(secrets.SecretError, match="cannot read"):
        secrets.from_env("STOMP_URL", {"STOMP_URL_FILE": str(tmp_path / "missing")})

"""The relay's SQL, kept in cdc/sql/*.sql and read once."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    return resources.files("cdc").joinpath("sql", f"{name}.sql").read_text()

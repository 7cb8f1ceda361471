"""Configuration values that may carry secrets: from NAME, or from the file NAME_FILE.

``DATABASE_URL_FILE=/run/secrets/db_url`` keeps the password out of the environment
that ``ps e`` and /proc show, as docker and systemd credentials expect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class SecretError(ValueError):
    """A NAME/NAME_FILE pair could not be read; the message never contains the value."""


def from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise SecretError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
    return value or None

"""Run an external program the generator depends on: a checker or a reload command."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from generator import errors


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    what: str,
    error: type[errors.GeneratorError],
) -> tuple[int, str]:
    """Run ``argv`` with no input; return its exit code and its stdout and stderr together.

    Raise ``error`` naming ``what`` if it cannot start or does not finish in ``timeout``
    seconds (it is killed then)."""
    try:
        completed = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise error(f"{what} could not run: {exc}") from exc
    return completed.returncode, completed.stdout.decode("utf-8", errors="replace")

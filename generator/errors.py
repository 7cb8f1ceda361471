"""Exceptions of the generator package: one root, so callers can catch them all."""

from __future__ import annotations


class GeneratorError(Exception):
    """Root of every error the generator raises on purpose."""


class InvalidOptions(GeneratorError, ValueError):
    """Render options an operator gave are unusable (e.g. default lease > max lease)."""


class UnsafeValue(GeneratorError, ValueError):
    """A value cannot be written into a config file safely.

    ``generator.validate`` removes such values first; meeting one while rendering is
    a bug, and refusing beats writing a config that a database value could subvert.
    """


class CheckerFailed(GeneratorError):
    """The syntax checker could not give a verdict (timed out, could not start)."""


class ConfigRejected(GeneratorError):
    """The real server's checker (``dhcpd -t`` / ``kea-dhcp4 -t``) rejected a file."""

    def __init__(self, *, checker: str, path: str, returncode: int, output: str) -> None:
        self.checker = checker
        self.path = path
        self.returncode = returncode
        self.output = output
        first = next((line for line in output.splitlines() if line.strip()), "no output")
        super().__init__(f"{checker} rejected {path} (exit {returncode}): {first}")

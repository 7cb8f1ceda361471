"""The relay's exceptions: one root, and the two outages it rides out by reconnecting."""

from __future__ import annotations


class CdcError(Exception):
    """Root of every error the relay raises on purpose."""


class ConfigError(CdcError):
    """Bad configuration: the command exits with this one-line reason."""


class DatabaseUnavailable(CdcError):
    """PostgreSQL could not be reached, or the connection broke."""


class BrokerUnavailable(CdcError):
    """The broker could not be reached, refused a frame, or did not confirm in time."""

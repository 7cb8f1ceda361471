"""The relay's exceptions: one root, the outages it rides out by reconnecting, and the
stop that cuts a blocking wait short."""

from __future__ import annotations


class CdcError(Exception):
    """Root of every error the relay raises on purpose."""


class ConfigError(CdcError):
    """Bad configuration: the command exits with this one-line reason."""


class DatabaseUnavailable(CdcError):
    """PostgreSQL could not be reached, or the connection broke."""


class BrokerUnavailable(CdcError):
    """The broker could not be reached, refused a frame, or did not confirm in time."""


class MetricsUnavailable(CdcError):
    """The metrics endpoint could not listen on its port (in use, not allowed)."""


class Stopping(CdcError):
    """A stop was requested while waiting (for a connection, say): give up the wait."""

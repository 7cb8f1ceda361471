"""DATABASE_URL in the forms each driver wants, and as logs may show it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_PREFIXES = ("postgresql+psycopg://", "postgresql://", "postgres://")


def psycopg_url(url: str) -> str:
    """psycopg wants postgresql://; accept postgresql+psycopg:// (SQLAlchemy's form) too."""
    for prefix in _PREFIXES:
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql:// (or postgresql+psycopg://)")


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + psycopg_url(url)[len("postgresql://") :]


def redact(url: str) -> str:
    """The URL without its password."""
    split = urlsplit(url)
    if split.password is None:
        return url
    netloc = split.netloc.replace(f":{split.password}@", ":***@", 1)
    return urlunsplit(split._replace(netloc=netloc))

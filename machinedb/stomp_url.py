"""Parse STOMP_URL: one broker or a comma-separated failover list.

    stomp://user:pass@host:61613
    stomp+ssl://user:pass@broker1:61614,stomp+ssl://broker2:61614
    stomp://user:pass@rabbit:61613/machinedb      (RabbitMQ virtual host "machinedb")

Credentials given on any entry apply to all (a failover list names one cluster), and so
does a virtual host: the URL path, percent-decoded, as in AMQP URIs ("/%2F" is "/");
none means RabbitMQ's default "/". It goes into CONNECT's ``host`` header, which
RabbitMQ reads as the virtual host (ActiveMQ ignores it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from machinedb import broker_profile

DEFAULT_PORT = 61613
DEFAULT_VHOST = "/"
SCHEMES = {"stomp": False, "stomp+ssl": True, "stomp+tls": True, "ssl": True, "tcp": False}


@dataclass(frozen=True, kw_only=True)
class BrokerEndpoint:
    host: str
    port: int
    ssl: bool

    def __str__(self) -> str:
        return f"{'stomp+ssl' if self.ssl else 'stomp'}://{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    endpoints: tuple[BrokerEndpoint, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    vhost: str = DEFAULT_VHOST
    # the broker kind ("activemq", "rabbitmq") when configured; None: the commands
    # detect it from the CONNECTED frame (machinedb.broker_profile)
    kind: str | None = None

    def redacted(self) -> str:
        """The URL as logs may show it: endpoints and user, never the password."""
        user = f"{self.username}:***@" if self.username else ""
        path = "" if self.vhost == DEFAULT_VHOST else "/" + quote(self.vhost, safe="")
        return ",".join(
            f"{'stomp+ssl' if e.ssl else 'stomp'}://{user}{e.host}:{e.port}{path}"
            for e in self.endpoints
        )


# STOMP 1.2 header escapes. Clients send CONNECT headers unescaped, as the spec says,
# but ActiveMQ 5.x decodes them anyway: a password "pa\cs" arrives as "pa:s" and fails.
_DECODED_BY_BROKER = re.compile(r"\\[\\cnr]")


def parse(url: str, *, kind: str | None = None) -> BrokerConfig:
    """Parse a STOMP_URL; ValueError with a one-line reason when it is malformed.
    ``kind``: the broker kind when configured (STOMP_BROKER), None to detect it."""
    if not url or not url.strip():
        raise ValueError("STOMP_URL is empty (e.g. stomp://user:pass@localhost:61613)")
    endpoints: list[BrokerEndpoint] = []
    username: str | None = None
    password: str | None = None
    vhost: str | None = None
    for raw in url.split(","):
        part = raw.strip()
        if not part:
            continue
        split = urlsplit(part)
        if split.scheme not in SCHEMES:
            raise ValueError(
                f"STOMP_URL entry {_redact_entry(part)!r}: scheme must be stomp:// or stomp+ssl://"
            )
        try:
            port = split.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"STOMP_URL entry {_redact_entry(part)!r}: bad port") from exc
        if not split.hostname:
            raise ValueError(f"STOMP_URL entry {_redact_entry(part)!r}: no host")
        if split.path not in ("", "/"):
            entry_vhost = unquote(split.path[1:])
            if vhost is not None and entry_vhost != vhost:
                raise ValueError(
                    "STOMP_URL: the entries name different virtual hosts"
                    f" ({vhost!r}, {entry_vhost!r}); a failover list names one"
                )
            vhost = entry_vhost
        if split.username is not None:
            username = unquote(split.username)
            password = unquote(split.password) if split.password is not None else None
        endpoints.append(BrokerEndpoint(host=split.hostname, port=port, ssl=SCHEMES[split.scheme]))
    if not endpoints:
        raise ValueError("STOMP_URL names no broker")
    for what, value in (("user name", username), ("password", password)):
        if value is not None and _DECODED_BY_BROKER.search(value):
            raise ValueError(
                f"STOMP_URL: the broker {what} has a backslash before c, n, r or another"
                " backslash; ActiveMQ decodes these STOMP escapes in the CONNECT frame, where"
                " clients send them as they are, so it could never log in: choose another"
            )
    return BrokerConfig(
        endpoints=tuple(endpoints),
        username=username,
        password=password,
        vhost=vhost or DEFAULT_VHOST,
        kind=broker_profile.check_kind(kind) if kind else None,
    )


def _redact_entry(part: str) -> str:
    split = urlsplit(part)
    if split.password is None:
        return part
    return part.replace(f":{split.password}@", ":***@", 1)

"""Parsing of STOMP_URL and DATABASE_URL, and the reconnect back-off."""

from __future__ import annotations

import itertools

import pytest

from machinedb import daemon, db_url, stomp_url


def test_single_broker_with_credentials() -> None:
    config = stomp_url.parse("stomp://relay:s3cr%40t@mq.example.org:61613")
    assert config.endpoints == (
        stomp_url.BrokerEndpoint(host="mq.example.org", port=61613, ssl=False),
    )
    assert (config.username, config.password) == ("relay", "s3cr@t")
    assert "s3cr" not in config.redacted() and "s3cr" not in repr(config)


def test_failover_list_mixes_tls_and_default_port() -> None:
    config = stomp_url.parse("stomp+ssl://u:p@a:61614, stomp://b")
    assert [(e.host, e.port, e.ssl) for e in config.endpoints] == [
        ("a", 61614, True),
        ("b", 61613, False),
    ]
    assert config.username == "u"
    assert config.redacted() == "stomp+ssl://u:***@a:61614,stomp://u:***@b:61613"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("http://x:1", "scheme"),
        ("stomp://:61613", "no host"),
        ("stomp://h:99999", "port"),
        (" , ", "no broker"),
    ],
)
def test_bad_stomp_url_gives_one_line_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        stomp_url.parse(url)
    assert "\n" not in str(raised.value)


def test_bad_stomp_url_error_hides_the_password() -> None:
    with pytest.raises(ValueError) as raised:
        stomp_url.parse("amqp://u:hunter2@h:1")
    assert "hunter2" not in str(raised.value)


def test_database_url_forms() -> None:
    assert db_url.psycopg_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert db_url.sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert db_url.redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    with pytest.raises(ValueError, match="postgresql://"):
        db_url.psycopg_url("mysql://u@h/db")


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    delays = list(itertools.islice(daemon.backoff(initial=1.0, cap=8.0), 8))
    steps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    assert len(set(delays)) > 1


@pytest.mark.parametrize("secret", ["pa\\cs", "pa\\\\s", "pa\\ns", "pa\\rs"])
def test_credentials_the_broker_would_decode_are_refused(secret: str) -> None:
    """ActiveMQ decodes STOMP escapes in CONNECT headers, which clients send as they are:
    such a password could never log in (checked against the real broker)."""
    quoted = secret.replace("\\", "%5C")
    with pytest.raises(ValueError, match="backslash") as caught:
        stomp_url.parse(f"stomp://relay:{quoted}@localhost:61613")
    assert secret not in str(caught.value) and quoted not in str(caught.value)
    with pytest.raises(ValueError, match="user name"):
        stomp_url.parse(f"stomp://{quoted}:x@localhost:61613")


def test_other_backslashes_are_fine() -> None:
    config = stomp_url.parse("stomp://relay:a%5Czq%5C1@localhost:61613")
    assert config.password == "a\\zq\\1"

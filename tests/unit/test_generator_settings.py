"""Settings from flags and environment: flags win, bad values give one-line reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator import cli, settings

DB = "postgresql://machinedb@localhost/machinedb"


def load(argv: list[str], env: dict[str, str] | None = None) -> settings.Settings:
    args = cli.build_parser().parse_args(argv)
    return cli.load_settings(args, env if env is not None else {"DATABASE_URL": DB})


def test_consumer_queue_from_virtual_topic() -> None:
    assert (
        settings.consumer_queue("/topic/VirtualTopic.machinedb.changes", "dhcp")
        == "/queue/Consumer.dhcp.VirtualTopic.machinedb.changes"
    )


@pytest.mark.parametrize(
    ("destination", "consumer"),
    [
        ("/queue/machinedb.changes", "dhcp"),
        ("/topic/VirtualTopic.", "dhcp"),
        ("/topic/VirtualTopic.x", "a.b"),
        ("/topic/VirtualTopic.x", ""),
    ],
)
def test_bad_destination_or_consumer(destination: str, consumer: str) -> None:
    with pytest.raises(ValueError, match=r"CDC_DESTINATION|DHCP_CONSUMER"):
        settings.consumer_queue(destination, consumer)


def test_defaults() -> None:
    config = load([])
    assert config.queue == "/queue/Consumer.dhcp.VirtualTopic.machinedb.changes"
    assert config.apply.fmt == "isc"
    assert config.apply.output == Path("/etc/dhcp/dhcpd.conf")
    assert config.apply.max_removal_share == 0.5
    assert config.prefetch == settings.PREFETCH
    assert config.stomp_url is None


def test_environment_is_read() -> None:
    env = {
        "DATABASE_URL": DB,
        "STOMP_URL": "stomp://u:p@broker:61613",
        "CDC_DESTINATION": "/topic/VirtualTopic.other",
        "DHCP_CONSUMER": "dhcp2",
    }
    config = load(["--format", "kea"], env)
    assert config.stomp_url == "stomp://u:p@broker:61613"
    assert config.queue == "/queue/Consumer.dhcp2.VirtualTopic.other"
    assert config.apply.output == Path("/etc/kea/kea-dhcp4.conf")


def test_flags_win_over_environment() -> None:
    env = {"DATABASE_URL": "postgresql://env/db", "DHCP_CONSUMER": "fromenv"}
    config = load(
        [
            "--database-url",
            DB,
            "--consumer",
            "fromflag",
            "--reload-command",
            "systemctl reload 'isc dhcp'",
            "--output",
            "/tmp/x.conf",
        ],
        env,
    )
    assert config.database_url == DB
    assert config.queue.startswith("/queue/Consumer.fromflag.")
    assert config.apply.reload_command == ("systemctl", "reload", "isc dhcp")
    assert config.apply.output == Path("/tmp/x.conf")


def test_missing_database_url() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL is not set"):
        load([], {})


def test_bad_stomp_url() -> None:
    with pytest.raises(ValueError, match="STOMP_URL"):
        load(["--stomp-url", "http://x"])


def test_kea_socket_is_rendered_and_used() -> None:
    config = load(["--format", "kea", "--kea-control-socket", "/run/k.sock", "--interface", "eth1"])
    assert config.apply.kea_control_socket == "/run/k.sock"
    assert config.apply.options.control_socket == "/run/k.sock"
    assert config.apply.options.interfaces == ("eth1",)


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--once", "--database-url", "mysql://x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "postgresql://" in err[-1]


@pytest.mark.parametrize("share", ["-0.1", "1.5", "abc"])
def test_max_removal_share_range(share: str) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--max-removal-share", share])

"""Settings from flags and environment: flags win, bad values give one-line reasons."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import cli, render_options, settings

DB = "postgresql://machinedb@localhost/machinedb"


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """``cli.main`` sets up logging for the process; put the test's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
    assert config.apply.options.lease_file == render_options.KEA_LEASE_FILE


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--kea-control-socket", "/run/k.sock"),
        ("--interface", "eth1"),
        ("--kea-lease-file", "/var/lib/leases.csv"),
    ],
)
def test_kea_only_flags_are_refused_for_isc(flag: str, value: str) -> None:
    """ISC dhcpd has no control socket: the flag would silently do nothing."""
    with pytest.raises(ValueError, match=f"{flag} needs --format kea"):
        load(["--format", "isc", flag, value])


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command with ``argv``; assert exit 2 and exactly one line on stderr."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dhcp-generator: ")
    assert lines[0].endswith("(see --help)")
    return lines[0]


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, ["--once", "--database-url", "mysql://x"])
    assert "postgresql://" in line
    assert "usage:" not in line


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--log-level", "bogus"], "unknown log level 'bogus'"),
        (["--metrics-port", "99999"], "port number from 1 to 65535, not 99999"),
        (["--metrics-port", "0"], "port number from 1 to 65535, not 0"),
        (["--metrics-port", "http"], "port number"),
        (["--window", "-5"], "0 or more, not '-5'"),
        (["--window", "nan"], "not 'nan'"),
        (["--window", "inf"], "not 'inf'"),
        (["--max-removal-share", "nan"], "from 0 to 1, not 'nan'"),
        (["--max-removal-share", "1.5"], "from 0 to 1"),
        (["--prefetch", "0"], "from 1 to"),
        (["--prefetch", str(2**31)], "from 1 to"),
        (["--prefetch", "1e3"], "whole number"),
        (["--reconcile-interval", "-1"], "0 or more"),
        (["--format", "dhcpd"], "invalid choice: 'dhcpd'"),
        (["--once", "--dry-run"], "not allowed with"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--format", "isc", "--kea-control-socket", "/run/k"], "ISC dhcpd has no control socket"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    reason: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", DB)
    assert reason in usage_error(capsys, argv)


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Warn", "WARNING")])
def test_log_level_any_case(given: str, level: str) -> None:
    assert cli.build_parser().parse_args(["--log-level", given]).log_level == level


def test_good_numbers_are_taken() -> None:
    args = cli.build_parser().parse_args(
        ["--window", "0", "--metrics-port", "65535", "--prefetch", "1", "--reconcile-interval", "0"]
    )
    got = (args.window, args.metrics_port, args.prefetch, args.reconcile_interval)
    assert got == (0.0, 65535, 1, 0.0)


def test_server_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DHCP_SERVER", raising=False)
    parse = cli.build_parser().parse_args
    assert cli.load_settings(parse([]), {"DATABASE_URL": DB}).server is None
    env = {"DATABASE_URL": DB, "DHCP_SERVER": "site1-a"}
    assert cli.load_settings(parse([]), env).server == "site1-a"
    assert cli.load_settings(parse(["--server", "site2-b"]), env).server == "site2-b"


@pytest.mark.parametrize("share", ["-0.1", "1.5", "abc"])
def test_max_removal_share_range(share: str) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--max-removal-share", share])

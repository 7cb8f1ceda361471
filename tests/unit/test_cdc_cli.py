"""Configuration: environment and flags (flags win), one-line reasons for bad values."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cdc import cli, errors, settings


def load(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str]
) -> settings.Settings:
    for name in (
        "DATABASE_URL",
        "STOMP_URL",
        "CDC_DESTINATION",
        "DATABASE_URL_FILE",
        "STOMP_URL_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cli.load_settings(cli.build_parser().parse_args(argv))


BASE = {"DATABASE_URL": "postgresql+psycopg://m@db/machinedb", "STOMP_URL": "stomp://u:p@mq:61613"}


def test_environment_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(monkeypatch, BASE, [])
    assert config.database_url == "postgresql://m@db/machinedb"
    assert config.broker.endpoints[0].host == "mq"
    assert config.broker.password == "p"
    assert config.destination == "/topic/VirtualTopic.machinedb.changes"
    assert config.fallback_interval == settings.FALLBACK_INTERVAL
    assert config.metrics_port is None


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(
        monkeypatch,
        {**BASE, "CDC_DESTINATION": "/topic/VirtualTopic.env"},
        [
            "--database-url",
            "postgresql://flag@db/x",
            "--stomp-url",
            "stomp+ssl://a:61614,stomp+ssl://b:61614",
            "--destination",
            "/topic/VirtualTopic.flag",
            "--metrics-port",
            "9100",
        ],
    )
    assert config.database_url == "postgresql://flag@db/x"
    assert [e.host for e in config.broker.endpoints] == ["a", "b"]
    assert all(e.ssl for e in config.broker.endpoints)
    assert config.destination == "/topic/VirtualTopic.flag"
    assert config.metrics_port == 9100


@pytest.mark.parametrize(
    ("env", "argv", "reason"),
    [
        ({"STOMP_URL": "stomp://mq"}, [], "DATABASE_URL is not set"),
        ({"DATABASE_URL": "mysql://x"}, ["--stomp-url", "stomp://mq"], "postgresql://"),
        ({"DATABASE_URL": "postgresql://x/y"}, [], "STOMP_URL is empty"),
        ({**BASE}, ["--destination", "VirtualTopic.x"], "must start with /topic/"),
    ],
)
def test_bad_configuration_gives_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], reason: str
) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        load(monkeypatch, env, argv)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_status_needs_no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(monkeypatch, {"DATABASE_URL": "postgresql://x/y"}, ["status"])
    assert config.broker.endpoints == ()


def test_bad_configuration_exits_2_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("STOMP_URL", "http://user:hunter2@mq")
    assert cli.main([]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "hunter2" not in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--database-url", "--stomp-url", "--destination", "--metrics-port", "status"):
        assert flag in out


def test_secrets_may_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql://m:pw@db/machinedb\n")
    (tmp_path / "mq").write_text("stomp://u:p@mq:61613")
    config = load(
        monkeypatch,
        {"DATABASE_URL_FILE": str(tmp_path / "db"), "STOMP_URL_FILE": str(tmp_path / "mq")},
        [],
    )
    assert config.database_url == "postgresql://m:pw@db/machinedb"
    assert config.broker.username == "u"


@pytest.mark.parametrize("port", ["0", "65536", "70000", "-1", "http"])
def test_metrics_port_out_of_range_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("STOMP_URL", "stomp://mq:61613")
    with pytest.raises(SystemExit) as caught:
        cli.main(["--metrics-port", port])
    assert caught.value.code == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cdc-relay: ")
    assert "--metrics-port" in err


def test_metrics_port_in_use_exits_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/y")
    monkeypatch.setenv("STOMP_URL", "stomp://u:hunter2@127.0.0.1:1")
    # as if both services answered: the port is the only problem
    monkeypatch.setattr(cli, "check_database", lambda *a, **k: None)
    monkeypatch.setattr(cli, "check_broker", lambda *a, **k: None)
    with socket.create_server(("0.0.0.0", 0)) as busy:  # where the metrics server binds
        port = busy.getsockname()[1]
        code = cli.main(["--metrics-port", str(port)])
    assert code == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"cannot serve metrics on port {port}" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--batch-size", "x"],
        ["--fallback-interval", "nan"],
        ["--fallback-interval", "0"],
        ["--heartbeat", "-1"],
        ["--heartbeat", "inf"],
        ["--receipt-timeout", "nan"],
        ["--log-level", "bogus"],
        ["--no-such-flag"],
        ["sideways"],
    ],
)
def test_usage_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """NaN compares false with everything, so it used to pass a '<= 0' check and then
    switch the fallback drain or the heart-beat off; now every bad flag is one line."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("STOMP_URL", "stomp://mq:61613")
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("cdc-relay: ") and err.endswith("(see --help)\n")
    assert argv[0] in err or "invalid choice" in err


def test_log_level_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    for given, level in (("debug", "DEBUG"), ("Warn", "WARNING"), ("ERROR", "ERROR")):
        assert cli.build_parser().parse_args(["--log-level", given]).log_level == level

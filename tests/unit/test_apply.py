"""Applying a rendered file: atomic write, previous kept, reload only on change,
restore on a failed reload, and the wipe guard."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import apply, cli, errors, passes, read, render, settings, syntax_check


def host_block(n: int) -> str:
    return f"host h{n}-x {{\n  fixed-address 10.0.0.{n};\n}}\n"


def isc_text(hosts: int) -> str:
    return "# header\n" + "".join(host_block(n) for n in range(1, hosts + 1))


def recorder(tmp_path: Path, *, exit_code: int = 0) -> tuple[tuple[str, ...], Path]:
    """A reload command that appends the config it sees to a log, then exits."""
    log = tmp_path / "reloads.log"
    script = (
        "import os, sys; "
        f"open({str(log)!r}, 'a').write(open(os.environ['DHCP_CONFIG']).read() + '\\x00'); "
        f"sys.exit({exit_code})"
    )
    return (sys.executable, "-c", script), log


def reloads(log: Path) -> list[str]:
    if not log.exists():
        return []
    return log.read_text().split("\x00")[:-1]


def config_for(tmp_path: Path, **overrides: object) -> settings.ApplySettings:
    values: dict[str, object] = {
        "fmt": "isc",
        "output": tmp_path / "dhcpd.conf",
        "syntax_check": False,
    }
    values.update(overrides)
    return settings.ApplySettings(**values)  # type: ignore[arg-type]


def test_first_write_creates_file_and_reloads(tmp_path: Path) -> None:
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command)
    outcome = apply.apply(isc_text(3), config=config)
    assert outcome.changed and outcome.reloaded
    assert outcome.reservations == 3
    assert config.output.read_text() == isc_text(3)
    assert oct(config.output.stat().st_mode & 0o777) == oct(apply.DEFAULT_MODE)
    assert reloads(log) == [isc_text(3)]
    marker = tmp_path / f"dhcpd.conf{apply.LOADED_SUFFIX}"
    assert marker.read_text().strip() == hashlib.sha256(isc_text(3).encode()).hexdigest()
    assert not (tmp_path / "dhcpd.conf.prev").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dhcpd.conf",
        "dhcpd.conf.loaded",
        "reloads.log",
    ]


def test_same_bytes_do_not_reload(tmp_path: Path) -> None:
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command)
    apply.apply(isc_text(3), config=config)
    before = config.output.stat().st_ino
    outcome = apply.apply(isc_text(3), config=config)
    assert not outcome.changed and not outcome.reloaded
    assert len(reloads(log)) == 1
    assert config.output.stat().st_ino == before  # not even rewritten


def test_change_keeps_previous_and_keeps_mode(tmp_path: Path) -> None:
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command)
    apply.apply(isc_text(3), config=config)
    config.output.chmod(0o640)
    outcome = apply.apply(isc_text(4), config=config)
    assert outcome.changed and outcome.previous_reservations == 3
    assert config.output.read_text() == isc_text(4)
    assert (tmp_path / "dhcpd.conf.prev").read_text() == isc_text(3)
    assert config.output.stat().st_mode & 0o777 == 0o640
    assert reloads(log) == [isc_text(3), isc_text(4)]


def test_failed_reload_restores_previous_and_reloads_it(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    apply.apply(isc_text(3), config=config)
    command, log = recorder(tmp_path, exit_code=3)
    failing = config_for(tmp_path, reload_command=command)
    with pytest.raises(apply.ReloadFailed, match="exited 3") as info:
        apply.apply(isc_text(4), config=failing)
    assert "restored" in str(info.value)
    assert config.output.read_text() == isc_text(3)
    # the new file was tried first, then the restored previous one
    assert reloads(log) == [isc_text(4), isc_text(3)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_reload_command_is_a_reload_failure(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    apply.apply(isc_text(3), config=config)
    broken = config_for(tmp_path, reload_command=(str(tmp_path / "no-such-command"),))
    with pytest.raises(apply.ReloadFailed, match="could not run"):
        apply.apply(isc_text(4), config=broken)
    assert config.output.read_text() == isc_text(3)


def test_rejected_candidate_leaves_target_untouched(tmp_path: Path) -> None:
    """The real dhcpd -t refuses the candidate: nothing is renamed, nothing reloaded."""
    if syntax_check.find_binary("dhcpd") is None:
        pytest.skip("dhcpd is not installed")
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command, syntax_check=True)
    good = "authoritative;\n"
    apply.apply(good, config=config)
    with pytest.raises(errors.ConfigRejected):
        apply.apply("this is { not dhcpd\n", config=config)
    assert config.output.read_text() == good
    assert reloads(log) == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dhcpd.conf",
        "dhcpd.conf.loaded",
        "reloads.log",
    ]


@pytest.mark.parametrize(
    ("current", "new", "share", "floor", "refused"),
    [
        (100, 50, 0.5, 25, False),  # exactly half removed: allowed
        (100, 49, 0.5, 25, True),
        (100, 0, 0.5, 25, True),
        (100, 0, 1.0, 25, False),
        (0, 0, 0.5, 25, False),  # nothing to lose
        (3, 10, 0.0, 25, False),  # growth is never refused
        (1, 0, 0.5, 25, False),  # a lab deletes its only host
        (3, 0, 0.5, 25, False),
        (25, 0, 0.5, 25, False),  # up to the floor, whatever the share
        (26, 0, 0.5, 25, True),
        (10, 4, 0.5, 0, True),  # no floor: the share alone
    ],
)
def test_wipe_guard(
    tmp_path: Path, current: int, new: int, share: float, floor: int, refused: bool
) -> None:
    config = config_for(tmp_path, max_removal_share=share, removal_floor=floor)
    apply.apply(isc_text(current), config=config)
    if refused:
        with pytest.raises(apply.WipeRefused, match="--force"):
            apply.apply(isc_text(new), config=config)
        assert config.output.read_text() == isc_text(current)
    else:
        apply.apply(isc_text(new), config=config)
        assert config.output.read_text() == isc_text(new)


def test_wipe_guard_refuses_an_empty_read_of_a_large_site() -> None:
    with pytest.raises(apply.WipeRefused) as refused:
        apply.check_removal(
            current=100_000,
            new=0,
            max_share=settings.MAX_REMOVAL_SHARE,
            force=False,
            target=Path("dhcpd.conf"),
        )
    message = str(refused.value)
    assert "remove 100000 of 100000 reservations" in message
    assert "--once --force" in message and "carries on by itself" in message


def test_wipe_guard_yields_to_force(tmp_path: Path) -> None:
    apply.apply(isc_text(10), config=config_for(tmp_path))
    outcome = apply.apply(isc_text(1), config=config_for(tmp_path, force=True))
    assert outcome.changed and outcome.reservations == 1


def test_count_reservations_kea() -> None:
    text = json.dumps(
        {"Dhcp4": {"subnet4": [{"reservations": [{}, {}]}, {"reservations": [{}]}, {}]}}
    )
    assert apply.count_reservations(text, fmt="kea") == 3
    assert apply.count_reservations("not json", fmt="kea") == 0
    assert apply.count_reservations(None, fmt="isc") == 0


def test_reload_command_is_not_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = (sys.executable, "-c", "import sys; sys.exit(0)", f"; touch {marker}")
    apply.apply(isc_text(1), config=config_for(tmp_path, reload_command=command))
    assert not marker.exists()
    assert shlex.split("a 'b c'") == ["a", "b c"]
    assert os.path.exists(tmp_path / "dhcpd.conf")


def test_a_file_the_server_never_loaded_is_reloaded_once(tmp_path: Path) -> None:
    """A generator stopped between the rename and the reload: the next pass renders the
    same bytes, and must still get them loaded."""
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command)
    apply.apply(isc_text(3), config=config)
    assert reloads(log) == [isc_text(3)]
    config.output.write_text(isc_text(4))  # in place, never reloaded (the crash)
    outcome = apply.apply(isc_text(4), config=config)
    assert (outcome.changed, outcome.reloaded) == (False, True)
    assert reloads(log) == [isc_text(3), isc_text(4)]
    outcome = apply.apply(isc_text(4), config=config)  # loaded now: nothing to do
    assert (outcome.changed, outcome.reloaded) == (False, False)
    assert len(reloads(log)) == 2


def test_a_failed_reload_does_not_mark_the_file_loaded(tmp_path: Path) -> None:
    command, log = recorder(tmp_path, exit_code=1)
    config = config_for(tmp_path, reload_command=command)
    with pytest.raises(apply.ReloadFailed):
        apply.apply(isc_text(3), config=config)
    assert not (tmp_path / f"dhcpd.conf{apply.LOADED_SUFFIX}").exists()
    with pytest.raises(apply.ReloadFailed):  # tried again on the next pass, not skipped
        apply.apply(isc_text(3), config=config)
    assert reloads(log) == [isc_text(3), isc_text(3)]


def test_without_a_reload_command_nothing_is_marked(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    apply.apply(isc_text(3), config=config)
    outcome = apply.apply(isc_text(3), config=config)
    assert (outcome.changed, outcome.reloaded) == (False, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dhcpd.conf"]


# preview(): what --dry-run reports. The same checks as apply, nothing written.


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def require_dhcpd() -> None:
    if syntax_check.find_binary("dhcpd") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dhcpd is not installed, and CI=true requires it")
        pytest.skip("dhcpd is not installed")


def test_preview_of_a_change_runs_the_checker_and_writes_nothing(tmp_path: Path) -> None:
    require_dhcpd()
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command, syntax_check=True)
    apply.apply(isc_text(3), config=config)
    before = listing(tmp_path)
    preview = apply.preview(isc_text(4), config=config)
    assert (preview.changed, preview.reload, preview.refusal) == (True, True, None)
    assert (preview.reservations, preview.previous_reservations) == (4, 3)
    assert preview.check is not None and preview.check.checker == "dhcpd"
    assert not preview.check.skipped
    assert listing(tmp_path) == before
    assert reloads(log) == [isc_text(3)]


def test_preview_reports_what_the_checker_rejects(tmp_path: Path) -> None:
    require_dhcpd()
    config = config_for(tmp_path, syntax_check=True)
    apply.apply(isc_text(3), config=config)
    before = listing(tmp_path)
    preview = apply.preview(isc_text(3) + "this is { not dhcpd\n", config=config)
    assert preview.refusal is not None
    assert preview.refusal.startswith("dhcpd rejected the rendered dhcpd.conf (exit 1)")
    assert not preview.reload
    assert listing(tmp_path) == before
    with pytest.raises(errors.ConfigRejected):  # and the real run agrees
        apply.apply(isc_text(3) + "this is { not dhcpd\n", config=config)


def test_preview_reports_the_wipe_guard(tmp_path: Path) -> None:
    config = config_for(tmp_path, removal_floor=0)
    apply.apply(isc_text(10), config=config)
    before = listing(tmp_path)
    preview = apply.preview(isc_text(2), config=config)
    assert preview.refusal is not None and "--force" in preview.refusal
    assert listing(tmp_path) == before
    forced = apply.preview(isc_text(2), config=config_for(tmp_path, force=True, removal_floor=0))
    assert forced.refusal is None and forced.changed


def test_preview_of_the_same_bytes(tmp_path: Path) -> None:
    command, log = recorder(tmp_path)
    config = config_for(tmp_path, reload_command=command)
    assert apply.preview(isc_text(3), config=config).changed  # no file yet
    apply.apply(isc_text(3), config=config)
    preview = apply.preview(isc_text(3), config=config)
    assert (preview.changed, preview.reload, preview.refusal) == (False, False, None)
    config.output.with_name("dhcpd.conf.loaded").unlink()  # as if never loaded
    assert apply.preview(isc_text(3), config=config).reload
    assert reloads(log) == [isc_text(3)]


# --dry-run through the command, with the database read replaced by a fixed render


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The text the next render returns (set ``rendered[0]``); no database is read."""
    texts = [isc_text(1)]

    def prepare(engine: object, **kwargs: object) -> tuple[render.Document, read.Visibility]:
        return render.Document(fmt="isc", text=texts[0]), read.Visibility.parse("1:1:")

    monkeypatch.setattr(passes, "prepare", prepare)
    monkeypatch.delenv("DATABASE_URL_FILE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield texts
    root.handlers[:] = handlers  # the command set up logging of its own
    root.setLevel(level)


def dry_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str
) -> tuple[int, str, str]:
    code = cli.main(["--dry-run", "--output", str(tmp_path / "dhcpd.conf"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_refused_by_the_wipe_guard(
    rendered: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    apply.apply(isc_text(10), config=config_for(tmp_path))
    before = listing(tmp_path)
    rendered[0] = isc_text(2)
    code, out, err = dry_run(capsys, tmp_path, "--removal-floor", "0")
    assert code == cli.EXIT_FAILED
    assert "-host h3-x {" in out  # the diff is still shown
    assert err.splitlines()[-1].startswith(
        "dhcp-generator: dry run: a real run would refuse this render"
    )
    assert "would remove 8 of 10 reservations" in err and "--force" in err
    assert listing(tmp_path) == before
    code, _, err = dry_run(capsys, tmp_path, "--removal-floor", "0", "--force")
    assert code == 0
    assert "a real run would write" in err and "2 reservations (now 10)" in err
    code, _, err = dry_run(capsys, tmp_path)  # 8 removed: within the default floor
    assert code == 0


def test_dry_run_refused_by_the_checker(
    rendered: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    require_dhcpd()
    apply.apply(isc_text(3), config=config_for(tmp_path))
    before = listing(tmp_path)
    rendered[0] = isc_text(3) + "this is { not dhcpd\n"
    code, out, err = dry_run(capsys, tmp_path)
    assert code == cli.EXIT_FAILED
    assert "+this is { not dhcpd" in out
    assert "would refuse this render" in err and "dhcpd rejected" in err
    assert listing(tmp_path) == before
    code, _, err = dry_run(capsys, tmp_path, "--no-syntax-check")  # as a real run would
    assert code == 0 and "syntax check off" in err


def test_dry_run_accepted(
    rendered: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    require_dhcpd()
    apply.apply(isc_text(3), config=config_for(tmp_path))
    before = listing(tmp_path)
    rendered[0] = isc_text(4)
    code, out, err = dry_run(capsys, tmp_path, "--reload-command", "true")
    assert code == 0
    assert "+host h4-x {" in out
    assert err.splitlines()[-1] == (
        f"dhcp-generator: dry run: a real run would write and reload {tmp_path / 'dhcpd.conf'}"
        " with 4 reservations (now 3); dhcpd accepts it"
    )
    assert listing(tmp_path) == before
    rendered[0] = isc_text(3)
    code, out, err = dry_run(capsys, tmp_path)
    assert (code, out) == (0, "")
    assert "no change" in err

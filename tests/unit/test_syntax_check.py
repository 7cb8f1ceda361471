"""syntax_check: runs the real checker, returns ok or skipped, raises on rejection with
the checker's own explanation, and never waits longer than its timeout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from generator import errors, render, render_isc, syntax_check
from tests.unit.conftest import Checker, require_binary


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.dhcpd
def test_dhcpd_verdicts(tmp_path: Path, dhcpd_check: Checker) -> None:
    good = write(tmp_path, "good.conf", "authoritative;\n")
    result = syntax_check.check(good, fmt="isc")
    assert (result.checker, result.skipped, result.output) == ("dhcpd", False, "")
    bad = write(tmp_path, "bad.conf", "subnet 10.0.0.0 netmask 255.255.255.0 {\n")
    with pytest.raises(errors.ConfigRejected) as caught:
        syntax_check.check(bad, fmt="isc")
    assert caught.value.checker == "dhcpd"
    assert caught.value.returncode != 0
    assert "bad.conf line" in caught.value.output
    assert "Copyright" not in caught.value.output
    assert "If you think" not in caught.value.output
    assert str(caught.value).startswith(f"dhcpd rejected {bad} (exit ")


@pytest.mark.dhcpd
def test_kea_verdicts(tmp_path: Path, kea_check: Checker) -> None:
    good = write(tmp_path, "good.json", '{"Dhcp4": {"subnet4": []}}\n')
    assert syntax_check.check(good, fmt="kea").skipped is False
    bad = write(tmp_path, "bad.json", '{"Dhcp4": {"subnet4": [{"subnet": "10.0.0.0/33"}]}}')
    with pytest.raises(errors.ConfigRejected) as caught:
        syntax_check.check(bad, fmt="kea")
    assert caught.value.checker == "kea-dhcp4"
    assert caught.value.output.startswith("Error encountered: ")
    assert "Invalid prefix length" in str(caught.value)


def test_missing_checker_is_skipped_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syntax_check, "find_binary", lambda name: None)
    path = write(tmp_path, "any.conf", "garbage")
    result = syntax_check.check(path, fmt="isc")
    assert (result.checker, result.skipped) == ("dhcpd", True)
    assert "not installed" in result.output


def test_find_binary_looks_beyond_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = write(tmp_path, "kea-dhcp4", "#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(syntax_check, "SEARCH_DIRS", (str(tmp_path),))
    assert syntax_check.find_binary("kea-dhcp4") == str(fake)
    assert syntax_check.find_binary("no-such-checker") is None


def fake_checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    fake = write(tmp_path, "fake-checker", script)
    fake.chmod(0o755)
    monkeypatch.setattr(syntax_check, "find_binary", lambda name: str(fake))


def test_a_hung_checker_is_bounded_by_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_checker(tmp_path, monkeypatch, "#!/bin/sh\nexec sleep 30\n")
    with pytest.raises(errors.CheckerFailed, match=r"dhcpd did not finish within 0\.3 s"):
        syntax_check.check(tmp_path / "x.conf", fmt="isc", timeout=0.3)


def test_a_checker_that_cannot_start_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_checker(tmp_path, monkeypatch, "#!/bin/sh\n")
    (tmp_path / "fake-checker").chmod(0o644)  # no execute bit: not even root may run it
    with pytest.raises(errors.CheckerFailed, match="could not run"):
        syntax_check.check(tmp_path / "x.conf", fmt="kea")


def test_checkers_get_private_lock_and_pid_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "seen"
    fake_checker(
        tmp_path,
        monkeypatch,
        f'#!/bin/sh\necho "$KEA_LOCKFILE_DIR $*" > {out}\n',
    )
    syntax_check.check(tmp_path / "x.conf", fmt="isc")
    lock_dir, *argv = out.read_text().split()
    assert argv[:4] == ["-4", "-t", "-cf", str(tmp_path / "x.conf")]
    assert argv[4] == "-lf" and argv[5].startswith(lock_dir)
    assert not Path(lock_dir).exists()  # removed after the check


def test_require_binary_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syntax_check, "find_binary", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_binary("dhcpd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_binary("dhcpd")


def isc_document(preamble: str, *hosts: str) -> render.Document:
    parts = render_isc.Parts(preamble=preamble, hosts=hosts)
    return render.Document(fmt="isc", text=preamble + "".join(hosts), parts=parts)


def host_block(n: int) -> str:
    return f"\nhost h{n} {{\n  hardware ethernet 02:00:00:00:00:{n:02x};\n}}\n"


PREAMBLE = "authoritative;\nsubnet 10.0.0.0 netmask 255.255.255.0 {\n}\n"


def spy_on_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the real checker is given from now on, in order."""
    checked: list[str] = []
    real_check = syntax_check.check

    def spy(path: str | os.PathLike[str], **kwargs: Any) -> syntax_check.CheckResult:
        checked.append(Path(path).read_text(encoding="utf-8"))
        return real_check(path, **kwargs)

    monkeypatch.setattr(syntax_check, "check", spy)
    return checked


@pytest.mark.dhcpd
def test_incremental_checks_only_new_host_blocks_under_the_same_preamble(
    tmp_path: Path, dhcpd_check: Checker, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = spy_on_checks(monkeypatch)
    incremental = syntax_check.Incremental()

    def run(document: render.Document, new: list[str]) -> None:
        candidate = write(tmp_path, "dhcpd.conf", document.text)
        incremental.check(candidate, document, new=new)

    first = isc_document(PREAMBLE, host_block(1), host_block(2))
    run(first, [host_block(1), host_block(2)])
    assert checked[-1] == first.text  # the first file: all of it
    run(isc_document(PREAMBLE, host_block(1), host_block(2), host_block(3)), [host_block(3)])
    assert checked[-1] == PREAMBLE + host_block(3)  # then only what is new
    run(isc_document(PREAMBLE, host_block(2)), [])
    assert checked[-1] == PREAMBLE  # a removal: the preamble alone
    preamble = PREAMBLE + "ddns-update-style none;\n"
    changed = isc_document(preamble, host_block(2), host_block(4))
    run(changed, [host_block(4)])
    assert checked[-1] == changed.text  # a new preamble: all of it again

    broken = "\nhost h5 {\n  hardware ethernet 02:00:00:00:00:05\n}\n"  # no semicolon
    with pytest.raises(errors.ConfigRejected) as caught:
        run(isc_document(preamble, host_block(2), broken), [broken])
    assert checked[-1] == preamble + broken
    assert "the new host blocks of" in str(caught.value)
    # A rejected pass keeps its changes: the block is new again next time.
    with pytest.raises(errors.ConfigRejected):
        run(isc_document(preamble, broken), [broken])
    assert checked[-1] == preamble + broken


def test_incremental_checks_kea_files_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def fake(path: str | os.PathLike[str], **kwargs: Any) -> syntax_check.CheckResult:
        seen.append(Path(path).read_text(encoding="utf-8"))
        return syntax_check.CheckResult(checker="kea-dhcp4", skipped=False, output="")

    monkeypatch.setattr(syntax_check, "check", fake)
    incremental = syntax_check.Incremental()
    for text in ('{"Dhcp4": {}}', '{"Dhcp4": {"subnet4": []}}'):
        candidate = write(tmp_path, "kea.json", text)
        incremental.check(candidate, render.Document(fmt="kea", text=text), new=[])
    assert seen == ['{"Dhcp4": {}}', '{"Dhcp4": {"subnet4": []}}']

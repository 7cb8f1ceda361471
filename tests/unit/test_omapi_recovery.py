"""What a generator stopped between an OMAPI send and the file write leaves behind, and
how the next run cleans it up (with a fake dhcpd, real files)."""

from __future__ import annotations

from pathlib import Path

from generator import omapi, omapi_apply, omapi_journal, passes
from tests.unit.test_omapi_apply import A, B, FakeDhcpd
from tests.unit.test_passes_omapi import Lab, row


def test_a_removed_host_goes_whatever_name_dhcpd_holds_its_mac_under() -> None:
    # dhcpd took web1's MAC under a name the file never had (a renamed host, sent
    # before a crash); the database now drops the host: both names must go
    other = omapi.Host(name="www1-02-00-00-00-00-01", mac="02:00:00:00:00:01", ip="10.0.0.10")
    server = FakeDhcpd([other, omapi_apply.host_of(B)])
    omapi_apply.send(server, omapi_apply.diff([(A, None)]))  # type: ignore[arg-type]
    assert list(server.hosts) == ["db1-02-00-00-00-00-02"]


def test_hosts_sent_but_never_written_are_deleted_on_the_next_start(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=3)
    journal = omapi_journal.path_for(lab.config.output)
    assert not journal.exists()  # cleared once the file held what was sent
    # a run sent h9 and stopped before writing the file; the database then dropped h9
    stray = omapi_apply.host_of(passes.render_isc.host_block(row(9)))
    omapi_journal.record(journal, [stray])
    lab.dhcpd.hosts[stray.name] = stray
    restarted = passes.Pipeline(
        None,  # type: ignore[arg-type]
        config=lab.config,
        metrics=lab.metrics,
        hosts=lab.dhcpd,  # type: ignore[arg-type]
        restart_settle=0.3,
    )
    fresh = lab.build()
    restarted._inherit_from_file(fresh)  # as the first full pass does
    restarted.state = fresh
    lab.rows[4] = row(4)
    fresh.update([row(4)], [])
    assert restarted._apply(fresh)
    assert stray.name not in lab.dhcpd.hosts
    assert "delete h9-02-00-00-00-00-09" in lab.dhcpd.calls
    assert "h4-02-00-00-00-00-04" in lab.dhcpd.hosts
    assert not journal.exists()


def test_the_record_is_written_before_the_send(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=2)
    journal = omapi_journal.path_for(lab.config.output)
    seen: list[set[omapi_journal.Entry]] = []
    real_add = lab.dhcpd.add

    def add(host: omapi.Host) -> None:
        seen.append(omapi_journal.read(journal))
        real_add(host)

    lab.dhcpd.add = add  # type: ignore[method-assign]
    assert lab.change([row(5)], [])
    assert seen == [{("h5-02-00-00-00-00-05", "02:00:00:00:00:05")}]
    assert not journal.exists()


def test_recorded_hosts_the_file_declares_are_sent_again_on_start(tmp_path: Path) -> None:
    """A run stopped after writing the file but before dhcpd showed its hosts (a
    restart's check): the host may be hidden by a `deleted` lease record, so it is
    sent again."""
    lab = Lab(tmp_path, hosts=3)
    journal = omapi_journal.path_for(lab.config.output)
    hidden = omapi_apply.host_of(passes.render_isc.host_block(row(2)))
    omapi_journal.record(journal, [hidden])
    del lab.dhcpd.hosts[hidden.name]  # in the file, but dhcpd hides it
    restarted = passes.Pipeline(
        None,  # type: ignore[arg-type]
        config=lab.config,
        metrics=lab.metrics,
        hosts=lab.dhcpd,  # type: ignore[arg-type]
        restart_settle=0.3,
    )
    fresh = lab.build()
    restarted._inherit_from_file(fresh)
    restarted.state = fresh
    assert restarted._apply(fresh)
    assert lab.dhcpd.hosts[hidden.name] == hidden
    assert not journal.exists()


def test_a_restart_whose_check_failed_is_checked_again_at_the_next_apply(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, hosts=3)
    real_add = lab.dhcpd.add
    down = [True]

    def add(host: omapi.Host) -> None:
        if down[0]:
            raise omapi.Unreachable("OMAPI: cannot connect")
        real_add(host)

    lab.dhcpd.add = add  # type: ignore[method-assign]
    assert lab.change([row(5)], [])  # restarted instead; the check after it failed too
    assert "h5-02-00-00-00-00-05" not in lab.dhcpd.hosts
    assert omapi_journal.path_for(lab.config.output).exists()  # kept for a restarted run
    down[0] = False
    assert lab.change([row(6)], [])
    assert {"h5-02-00-00-00-00-05", "h6-02-00-00-00-00-06"} <= set(lab.dhcpd.hosts)
    assert not omapi_journal.path_for(lab.config.output).exists()


def test_after_a_restart_only_what_differs_is_mended() -> None:
    """dhcpd restarted on a file declaring A and B: A is there (one lookup, no add), B
    is hidden by a `deleted` lease record (added again), and a removed host that a
    `dynamic` record brought back is deleted."""
    gone = omapi.Host(name="old1-02-00-00-00-00-09", mac="02:00:00:00:00:09", ip="10.0.0.9")
    server = FakeDhcpd([omapi_apply.host_of(A), gone])
    plan = omapi_apply.Diff(removed=(gone,), added=(omapi_apply.host_of(A), omapi_apply.host_of(B)))
    omapi_apply.mend(server, plan)  # type: ignore[arg-type]
    assert set(server.hosts) == {"web1-02-00-00-00-00-01", "db1-02-00-00-00-00-02"}
    assert "add web1-02-00-00-00-00-01" not in server.calls
    assert "add db1-02-00-00-00-00-02" in server.calls

"""generator.kea_hosts without a database: the row difference, the checks against the
rendered file, the hosts-database section, the flags, and when the writer compares the
whole table."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from generator import (
    cli,
    errors,
    kea_hosts,
    metrics,
    model,
    render,
    render_kea,
    render_options,
    settings,
    state,
    validate,
)
from tests.unit.conftest import Checker
from tests.unit.inventories import interface, sample, subnet

READER = render_options.KeaHostsDatabase(name="kea", host="db.example", port=5432, user="kea")
OPTIONS = render_options.RenderOptions(kea_hosts_database=READER)
WRITER_URL = "postgresql://kea_writer:s3cret@db.example:5432/kea"


def row(subnet_id: int, mac: int, address: str, hostname: str | None = "h") -> kea_hosts.Row:
    return kea_hosts.Row(
        subnet_id=subnet_id,
        mac=bytes([2, 0, 0, 0, 0, mac]),
        address=int(ipaddress.IPv4Address(address)),
        hostname=hostname,
    )


def stored(host_id: int, item: kea_hosts.Row, kind: int = 0) -> Any:
    return kea_hosts._Stored(host_id=host_id, identifier_type=kind, row=item)


# -- the difference ----------------------------------------------------------------------


def test_plan_updates_in_place_deletes_strays_and_inserts_the_rest() -> None:
    table = [
        stored(1, row(1, 1, "10.0.0.10")),  # kept as is
        stored(2, row(1, 2, "10.0.0.11")),  # moves: an update
        stored(3, row(1, 3, "10.0.0.12")),  # gone
        stored(4, row(2, 1, "10.0.1.10")),  # same MAC, another subnet: gone
        stored(5, row(1, 4, "10.0.0.13"), kind=1),  # a client-id row: not the generator's
    ]
    wanted = [row(1, 1, "10.0.0.10"), row(1, 2, "10.0.0.20"), row(1, 5, "10.0.0.21")]
    changes = kea_hosts.plan(table, wanted)
    assert changes.delete == (3, 4, 5)
    assert changes.update == ((2, row(1, 2, "10.0.0.20")),)
    assert changes.insert == (row(1, 5, "10.0.0.21"),)


def test_plan_of_equal_sets_is_empty() -> None:
    rows = [row(1, n, f"10.0.0.{n + 10}") for n in range(5)]
    assert len(kea_hosts.plan([stored(n, r) for n, r in enumerate(rows)], rows)) == 0


def test_a_hostname_change_is_an_update() -> None:
    changes = kea_hosts.plan([stored(7, row(1, 1, "10.0.0.10", "old"))], [row(1, 1, "10.0.0.10")])
    assert changes.update == ((7, row(1, 1, "10.0.0.10")),) and not changes.delete


# -- the checks --------------------------------------------------------------------------


SUBNETS = {
    1: kea_hosts.FileSubnet(
        id=1,
        network=ipaddress.IPv4Network("10.0.0.0/24"),
        pools=(
            (int(ipaddress.IPv4Address("10.0.0.100")), int(ipaddress.IPv4Address("10.0.0.200"))),
        ),
    )
}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row(9, 1, "10.0.0.10"), "no subnet4 of the config has this id"),
        (row(1, 1, "10.0.1.10"), "outside the subnet 10.0.0.0/24"),
        (row(1, 1, "10.0.0.0"), "the network or broadcast address"),
        (row(1, 1, "10.0.0.255"), "the network or broadcast address"),
        (row(1, 1, "10.0.0.150"), "inside a dynamic pool"),
        (row(1, 1, "10.0.0.10", 'x"; }'), "not RFC 1123"),
        (kea_hosts.Row(subnet_id=1, mac=b"\x02", address=167772170, hostname=None), "not a MAC"),
    ],
)
def test_a_row_kea_must_not_see_is_named(bad: kea_hosts.Row, reason: str) -> None:
    [problem] = kea_hosts.problems([bad], SUBNETS)
    assert reason in problem
    with pytest.raises(kea_hosts.Refused, match="refusing to write 1 reservations"):
        kea_hosts.check([bad], SUBNETS)


def test_one_reservation_per_mac_and_per_address_in_a_subnet() -> None:
    found = kea_hosts.problems(
        [row(1, 1, "10.0.0.10"), row(1, 1, "10.0.0.11"), row(1, 2, "10.0.0.10")], SUBNETS
    )
    assert len(found) == 2
    assert "second reservation for this MAC" in found[0]
    assert "second reservation for this address" in found[1]
    assert kea_hosts.problems([row(1, 1, "10.0.0.10"), row(1, 2, "10.0.0.11")], SUBNETS) == []


def test_a_refusal_names_a_few_problems_and_counts_the_rest() -> None:
    bad = [row(9, n, "10.0.0.10") for n in range(8)]
    with pytest.raises(kea_hosts.Refused, match=r"refusing to write 8 .*\(and 3 more\)$"):
        kea_hosts.check(bad, SUBNETS)


def test_file_subnets_reads_ids_networks_and_pools_of_the_rendered_file() -> None:
    text = render_kea.render(validate.check(sample()).inventory, options=OPTIONS)
    found = kea_hosts.file_subnets(json.loads(text))
    assert sorted(found) == [1, 2, 3, 8]
    assert found[1].network == ipaddress.IPv4Network("10.0.0.0/24")
    assert found[1].pools and all(first <= last for first, last in found[1].pools)
    config = {
        "Dhcp4": {
            "subnet4": [{"id": 4, "subnet": "10.9.0.0/24", "pools": [{"pool": "10.9.0.64/26"}]}]
        }
    }
    assert kea_hosts.file_subnets(config)[4].pools == (
        (int(ipaddress.IPv4Address("10.9.0.64")), int(ipaddress.IPv4Address("10.9.0.127"))),
    )


# -- the rendered file -------------------------------------------------------------------


def test_render_with_a_hosts_database_lists_no_reservations_and_no_password() -> None:
    text = render_kea.render(validate.check(sample()).inventory, options=OPTIONS)
    config = json.loads(text)["Dhcp4"]
    assert config["hosts-database"] == {
        "type": "postgresql",
        "name": "kea",
        "host": "db.example",
        "port": 5432,
        "user": "kea",
        "readonly": True,
        "connect-timeout": render_kea.HOSTS_DB_CONNECT_TIMEOUT,
        "max-reconnect-tries": render_kea.HOSTS_DB_RECONNECT_TRIES,
        "reconnect-wait-time": render_kea.HOSTS_DB_RECONNECT_WAIT,
        "on-fail": "serve-retry-exit",
    }
    assert config["host-reservation-identifiers"] == ["hw-address"]
    assert all("reservations" not in s and s["pools"] for s in config["subnet4"] if s["id"] == 1)
    assert "password" not in text
    inline = json.loads(
        render_kea.render(
            validate.check(sample()).inventory, options=render_options.RenderOptions()
        )
    )
    assert [s["id"] for s in inline["Dhcp4"]["subnet4"]] == [s["id"] for s in config["subnet4"]]


@pytest.mark.dhcpd
def test_kea_accepts_the_hosts_database_section(kea_check: Checker) -> None:
    socket = render_options.KeaHostsDatabase(
        name="kea", host="/run/postgresql", port=5432, user="kea"
    )
    options = render_options.RenderOptions(kea_hosts_database=socket)
    assert (
        kea_check(render_kea.render(validate.check(sample()).inventory, options=options)).skipped
        is False
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "kea; drop"), ("user", ""), ("host", "db example"), ("host", 'x"'), ("port", 0)],
)
def test_hosts_database_options_are_checked(field: str, value: Any) -> None:
    values: dict[str, Any] = {
        "name": "kea",
        "host": "db",
        "port": 5432,
        "user": "kea",
        field: value,
    }
    with pytest.raises(errors.InvalidOptions):
        render_options.KeaHostsDatabase(**values)


# -- flags -------------------------------------------------------------------------------


def load(argv: list[str], env: dict[str, str] | None = None) -> settings.Settings:
    args = cli.build_parser().parse_args(argv)
    return cli.load_settings(args, {"DATABASE_URL": "postgresql://m@localhost/m", **(env or {})})


def test_the_flag_sets_the_writer_and_renders_the_url_without_its_password() -> None:
    config = load(["--format", "kea", "--kea-hosts-database", WRITER_URL])
    assert config.apply.kea_hosts_database == WRITER_URL
    assert config.apply.options.kea_hosts_database == render_options.KeaHostsDatabase(
        name="kea", host="db.example", port=5432, user="kea_writer"
    )
    assert "s3cret" not in repr(config.apply)


def test_the_reader_url_names_what_kea_uses(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(WRITER_URL + "\n")
    config = load(
        ["--format", "kea"],
        {
            "KEA_HOSTS_DATABASE_URL_FILE": str(secret),
            "KEA_HOSTS_READER_URL": "postgresql://kea_reader@/kea?host=/run/postgresql&port=5433",
        },
    )
    assert config.apply.kea_hosts_database == WRITER_URL
    assert config.apply.options.kea_hosts_database == render_options.KeaHostsDatabase(
        name="kea", host="/run/postgresql", port=5433, user="kea_reader"
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--kea-hosts-database", WRITER_URL], {}, "needs --format kea"),
        (["--format", "isc"], {"KEA_HOSTS_DATABASE_URL": WRITER_URL}, "needs --format kea"),
        (
            ["--format", "kea", "--kea-hosts-reader", "postgresql://r@h/kea"],
            {},
            "needs --kea-hosts-database",
        ),
        (
            [
                "--format",
                "kea",
                "--kea-hosts-database",
                WRITER_URL,
                "--kea-hosts-reader",
                WRITER_URL,
            ],
            {},
            "PGPASSFILE",
        ),
        (
            ["--format", "kea", "--kea-hosts-database", "mysql://x@y/kea"],
            {},
            "postgresql://USER@HOST",
        ),
        (
            ["--format", "kea", "--kea-hosts-database", "postgresql://db.example/kea"],
            {},
            "needs a user",
        ),
        (
            ["--format", "kea", "--kea-hosts-database", WRITER_URL],
            {"KEA_HOSTS_DATABASE_URL": WRITER_URL},
            None,
        ),
    ],
)
def test_bad_kea_hosts_settings_give_one_line_reasons(
    argv: list[str], env: dict[str, str], message: str | None
) -> None:
    if message is None:  # the flag wins over the environment
        assert load(argv, env).apply.kea_hosts_database == WRITER_URL
        return
    with pytest.raises(ValueError, match=message) as raised:
        load(argv, env)
    assert "s3cret" not in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


# -- the writer: the whole table for a new state, the changed rows after it ---------------


class FakeDatabase:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[kea_hosts.Row], list[kea_hosts.Row]]] = []

    def sync(self, wanted: Sequence[kea_hosts.Row], *, guard: kea_hosts.Guard) -> kea_hosts.Outcome:
        self.calls.append(("sync", [], list(wanted)))
        return kea_hosts.Outcome(inserted=len(wanted))

    def change(
        self,
        before: Sequence[kea_hosts.Row],
        now: Sequence[kea_hosts.Row],
        *,
        guard: kea_hosts.Guard,
    ) -> kea_hosts.Outcome:
        self.calls.append(("change", list(before), list(now)))
        return kea_hosts.Outcome(updated=len(now))


def make_state() -> state.State[Any]:
    subnets = [subnet(1, "10.0.0.0/24", pool=("10.0.0.100", "10.0.0.200"))]
    rows = [
        interface(1, "a", "02:00:00:00:00:01", "10.0.0.10"),
        interface(2, "b", "02:00:00:00:00:02", "10.0.0.11"),
    ]
    return state.State.build_from(subnets, rows, make=lambda i: i)


def document_of(current: state.State[Any]) -> render.Document:
    inventory = model.Inventory(subnets=current.subnets, interfaces=())
    return render.document(inventory, fmt="kea", options=OPTIONS)


def test_a_new_state_is_compared_with_the_whole_table_then_only_changes_go() -> None:
    fake = FakeDatabase()
    writer = kea_hosts.Writer(fake, guard=kea_hosts.Guard())  # type: ignore[arg-type]
    current = make_state()
    document = document_of(current)
    assert writer.put(current, [], document=document, metrics=metrics.Metrics())
    assert fake.calls == [("sync", [], [row(1, 1, "10.0.0.10", "a"), row(1, 2, "10.0.0.11", "b")])]

    moved = interface(2, "b", "02:00:00:00:00:02", "10.0.0.12")
    current.update([moved], [])
    changed = [(before, now) for _, before, now in current.take_changes()]
    assert writer.put(current, changed, document=document, metrics=metrics.Metrics())
    assert fake.calls[-1] == (
        "change",
        [row(1, 2, "10.0.0.11", "b")],
        [row(1, 2, "10.0.0.12", "b")],
    )

    rebuilt = make_state()  # a full read: a new state, compared whole again
    assert writer.put(rebuilt, [], document=document, metrics=metrics.Metrics())
    assert fake.calls[-1][0] == "sync"


def test_a_refused_row_writes_nothing_and_is_counted() -> None:
    fake = FakeDatabase()
    writer = kea_hosts.Writer(fake, guard=kea_hosts.Guard())  # type: ignore[arg-type]
    current = make_state()
    counted = metrics.Metrics()
    assert writer.put(current, [], document=document_of(current), metrics=counted)
    pooled = interface(2, "b", "02:00:00:00:00:02", "10.0.0.150")  # in the pool
    [old] = [r for r in current.interfaces() if r.id == 2]
    assert not writer.put(current, [(old, pooled)], document=document_of(current), metrics=counted)
    assert [call[0] for call in fake.calls] == ["sync"]
    assert (
        counted.registry.get_sample_value("dhcp_generator_renders_total", {"result": "refused"})
        == 1
    )

"""render_kea: the golden Kea DHCPv4 JSON, accepted by the real kea-dhcp4, byte-stable,
with the DB subnet ids, reservations in their own subnet, and the operator's options."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator import errors, model, render, render_kea, render_options, validate
from tests.unit.conftest import Checker, Golden
from tests.unit.inventories import HOSTILE, boot_sample, interface, sample, subnet

OPTIONS = render_options.RenderOptions()


def sample_json(options: render_options.RenderOptions = OPTIONS) -> str:
    return render_kea.render(validate.check(sample()).inventory, options=options)


def test_sample_matches_golden(golden: Golden) -> None:
    golden("sample.kea.json", sample_json())


@pytest.mark.dhcpd
def test_kea_accepts_the_sample(kea_check: Checker) -> None:
    assert kea_check(sample_json()).skipped is False


def test_output_is_sorted_indented_json_with_a_final_newline() -> None:
    text = sample_json()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
    assert text.isascii()


def test_output_is_byte_stable_whatever_the_row_order() -> None:
    checked = validate.check(sample()).inventory
    shuffled = model.Inventory(subnets=checked.subnets[::-1], interfaces=checked.interfaces[::-1])
    assert render_kea.render(shuffled, options=OPTIONS) == sample_json()


def test_subnets_keep_their_database_ids_and_own_their_reservations() -> None:
    subnets = json.loads(sample_json())["Dhcp4"]["subnet4"]
    layout = {s["id"]: (s["subnet"], [r["ip-address"] for r in s["reservations"]]) for s in subnets}
    assert layout == {
        1: ("10.0.0.0/24", ["10.0.0.10"]),
        2: ("10.0.1.0/24", ["10.0.1.1", "10.0.1.10", "10.0.1.20", "10.0.1.21"]),
        8: ("172.16.3.0/24", ["172.16.3.5"]),
        3: ("192.168.50.0/26", ["192.168.50.30"]),
    }
    assert [s["id"] for s in subnets] == [1, 2, 8, 3]  # sorted by network


def test_subnet_options_pool_and_lifetimes() -> None:
    [lan] = [s for s in json.loads(sample_json())["Dhcp4"]["subnet4"] if s["id"] == 1]
    assert lan["option-data"] == [
        {"name": "routers", "data": "10.0.0.1"},
        {"name": "domain-name-servers", "data": "10.0.0.2, 10.0.0.3"},
        {"name": "domain-name", "data": "example.com"},
    ]
    assert lan["pools"] == [{"pool": "10.0.0.100 - 10.0.0.200"}]
    assert lan["valid-lifetime"] == lan["min-valid-lifetime"] == lan["max-valid-lifetime"] == 600
    assert lan["reservations"] == [
        {"hw-address": "02:00:00:00:00:01", "ip-address": "10.0.0.10", "hostname": "web1"}
    ]


def test_options_set_interfaces_lease_file_socket_and_lifetimes() -> None:
    options = render_options.RenderOptions(
        interfaces=("eth1", "eth2/10.0.0.1"),
        lease_file="/srv/kea/leases4.csv",
        control_socket="/srv/kea/ctrl.sock",
        default_lease_time=100,
        max_lease_time=200,
    )
    dhcp4 = json.loads(sample_json(options))["Dhcp4"]
    assert dhcp4["interfaces-config"] == {"interfaces": ["eth1", "eth2/10.0.0.1"]}
    assert dhcp4["lease-database"]["name"] == "/srv/kea/leases4.csv"
    assert dhcp4["lease-database"]["type"] == "memfile"
    assert dhcp4["control-socket"] == {"socket-type": "unix", "socket-name": "/srv/kea/ctrl.sock"}
    assert (dhcp4["valid-lifetime"], dhcp4["max-valid-lifetime"]) == (100, 200)


def test_facade_dispatches_by_format() -> None:
    assert render.render(validate.check(sample()).inventory, fmt="kea") == sample_json()


def test_render_refuses_text_that_validate_would_have_removed() -> None:
    # JSON quoting alone holds any text; a non-RFC 1123 name here means validation was skipped.
    host = interface(1, "web1", "02:00:00:00:00:01", "10.0.0.5")
    for lan, bad in (
        (subnet(1, "10.0.0.0/24"), dataclasses.replace(host, hostname=HOSTILE)),
        (subnet(1, "10.0.0.0/24"), dataclasses.replace(host, mac="02:00:00:00:00:01,x")),
        (subnet(1, "10.0.0.0/24", domain_name="a,b"), host),
    ):
        with pytest.raises(errors.UnsafeValue):
            render_kea.render(model.Inventory(subnets=(lan,), interfaces=(bad,)), options=OPTIONS)


def test_render_refuses_a_reservation_outside_every_subnet() -> None:
    stray = interface(1, "web1", "02:00:00:00:00:01", "10.9.0.5")
    with pytest.raises(errors.UnsafeValue, match="in no subnet"):
        render_kea.render(
            model.Inventory(subnets=(subnet(1, "10.0.0.0/24"),), interfaces=(stray,)),
            options=OPTIONS,
        )


@pytest.mark.dhcpd
def test_kea_rejects_duplicates_that_validate_removes(kea_check: Checker) -> None:
    rows = model.Inventory(
        subnets=(subnet(1, "10.0.0.0/24"),),
        interfaces=(
            interface(1, "a", "02:00:00:00:00:01", "10.0.0.5"),
            interface(2, "b", "02:00:00:00:00:01", "10.0.0.6"),
        ),
    )
    with pytest.raises(errors.ConfigRejected, match="already been added"):
        kea_check(render_kea.render(rows, options=OPTIONS))
    kea_check(render_kea.render(validate.check(rows).inventory, options=OPTIONS))


@pytest.mark.dhcpd
def test_kea_check_needs_the_interfaces_to_exist_on_this_host(kea_check: Checker) -> None:
    options = render_options.RenderOptions(interfaces=("mdbnoexist0",))
    with pytest.raises(errors.ConfigRejected, match="mdbnoexist0"):
        kea_check(sample_json(options))
    kea_check(sample_json(render_options.RenderOptions(interfaces=("lo",))))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(value=json_values)
def test_dumps_writes_what_json_dumps_writes(value: object) -> None:
    expected = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)
    assert render_kea._dumps(value) == expected


@pytest.mark.parametrize("value", [1.5, {"a": (1, 2)}, {1: "a"}, [b"x"]])
def test_dumps_refuses_types_a_config_does_not_hold(value: object) -> None:
    with pytest.raises(TypeError):
        render_kea._dumps(value)


# -- boot options (PXE) -----------------------------------------------------------------


def boot_json(options: render_options.RenderOptions = OPTIONS) -> str:
    checked = validate.check(boot_sample())
    assert checked.problems == ()
    return render_kea.render(checked.inventory, options=options)


def test_boot_sample_matches_golden(golden: Golden) -> None:
    golden("boot.kea.json", boot_json())


@pytest.mark.dhcpd
def test_kea_accepts_the_boot_sample(kea_check: Checker) -> None:
    assert kea_check(boot_json()).skipped is False


X64 = "option[93].hex == 0x0007 or option[93].hex == 0x0009"


def test_boot_options_on_subnets_reservations_and_classes() -> None:
    dhcp4 = json.loads(boot_json())["Dhcp4"]
    classes = {c["name"]: c for c in dhcp4["client-classes"]}
    subnets = {s["id"]: s for s in dhcp4["subnet4"]}
    pxe = subnets[1]
    assert (pxe["next-server"], pxe["boot-file-name"]) == ("10.0.0.5", "pxelinux.0")
    own = ["boot-subnet-1-arch0", "boot-subnet-1-arch7-9", "boot-subnet-1-arch11"]
    assert pxe["require-client-classes"][-3:] == own  # after the hosts' classes
    assert [(classes[n]["test"], classes[n]["boot-file-name"]) for n in own] == [
        ("option[93].hex == 0x0000", "bios/pxelinux.0"),
        (X64, "grubx64.efi"),
        ("option[93].hex == 0x000b", "grubaa64.efi"),
    ]
    assert all(classes[n]["only-if-required"] is True for n in own)
    assert subnets[2]["boot-file-name"] == "undionly.kpxe" and "next-server" not in subnets[2]
    assert not {"boot-file-name", "next-server"} & set(subnets[3])

    found = {r["hostname"]: r for s in dhcp4["subnet4"] for r in s["reservations"]}
    boot_keys = ("next-server", "boot-file-name", "client-classes")
    fields = {name: {k: r[k] for k in boot_keys if k in r} for name, r in found.items()}
    assert fields["inherits"] == fields["plain"] == {}
    assert fields["own-server"] == {"next-server": "10.0.0.6"}
    assert fields["own-file"] == {"boot-file-name": "install.efi"}
    # files that differ by architecture: a class of the reservation's own
    [uefi] = fields["uefi-only"]["client-classes"]
    assert set(fields["uefi-only"]) == {"client-classes"}
    assert classes[uefi] == {"name": uefi}  # assigned by the reservation, no test
    assert classes[f"{uefi}-arch7-9"]["test"] == f"member('{uefi}') and ({X64})"
    assert classes[f"{uefi}-arch7-9"]["boot-file-name"] == "r640/grubx64.efi"
    assert f"{uefi}-other" not in classes  # the others keep the subnet's files
    assert pxe["require-client-classes"][0] == f"{uefi}-arch7-9"
    [arm] = fields["file-and-arm"]["client-classes"]
    assert fields["file-and-arm"]["next-server"] == "10.0.1.7"
    assert "boot-file-name" not in fields["file-and-arm"]  # a reservation's file beats classes
    assert classes[f"{arm}-other"]["test"] == f"member('{arm}') and not (option[93].hex == 0x000b)"
    assert classes[f"{arm}-other"]["boot-file-name"] == "ipxe.efi"
    assert subnets[2]["require-client-classes"] == [f"{arm}-arch11", f"{arm}-other"]


def test_boot_classes_are_required_with_the_hosts_database_too() -> None:
    database = render_options.KeaHostsDatabase(name="kea", host="/run/pg", port=5432, user="kea")
    options = render_options.RenderOptions(kea_hosts_database=database)
    dhcp4 = json.loads(boot_json(options))["Dhcp4"]
    inline = json.loads(boot_json())["Dhcp4"]
    assert dhcp4["client-classes"] == inline["client-classes"]
    for entry, same in zip(dhcp4["subnet4"], inline["subnet4"], strict=True):
        assert "reservations" not in entry
        assert entry.get("require-client-classes") == same.get("require-client-classes")


def test_hosts_with_the_same_files_share_a_class() -> None:
    boot = model.Boot(file="a.0", file_uefi_x64="b.efi")
    assert render_kea.host_boot_class(boot) == render_kea.host_boot_class(
        dataclasses.replace(boot, next_server=None)
    )
    assert render_kea.host_boot_class(boot) != render_kea.host_boot_class(
        dataclasses.replace(boot, file_uefi_x64="c.efi")
    )
    assert render_kea.host_boot_class(model.Boot(file="a.0", file_uefi_x64="a.0")) is None
    assert render_kea.reservation_boot(model.Boot(file="a.0", file_uefi_x64="a.0")) == {
        "boot-file-name": "a.0"
    }

"""RenderOptions: defaults are the named constants, bad values raise InvalidOptions."""

from __future__ import annotations

import pytest

from generator import errors, render_options


def test_defaults() -> None:
    options = render_options.RenderOptions()
    assert options.interfaces == ()
    assert options.lease_file == render_options.KEA_LEASE_FILE
    assert options.control_socket == render_options.KEA_CONTROL_SOCKET
    assert options.default_lease_time == render_options.DEFAULT_LEASE_TIME == 3600
    assert options.max_lease_time == render_options.MAX_LEASE_TIME == 7200


def test_interfaces_list_becomes_a_tuple() -> None:
    options = render_options.RenderOptions(interfaces=["eth0", "eth1"])  # type: ignore[arg-type]
    assert options.interfaces == ("eth0", "eth1")
    assert hash(options)


@pytest.mark.parametrize(
    "fields",
    [
        {"interfaces": ("eth0; rm",)},
        {"interfaces": ("",)},
        {"interfaces": ("a" * 16,)},
        {"lease_file": "relative/leases.csv"},
        {"lease_file": '/var/lib/kea/"leases'},
        {"control_socket": "/run/" + "k" * 120},
        {"default_lease_time": 0},
        {"max_lease_time": 2**31},
        {"default_lease_time": 7201},
    ],
)
def test_bad_options_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidOptions):
        render_options.RenderOptions(**fields)  # type: ignore[arg-type]

"""Every rule of the machine database rejects bad input with a specific message and
leaves every table, the outbox included, unchanged."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.integration.inventory import seed, snapshot

pytestmark = pytest.mark.pg

# (statement, expected error class, fragments the message must contain)
BAD_INPUT = {
    "malformed mac": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1', '52:54:00:zz:00:09')",
        errors.InvalidTextRepresentation,
        ["macaddr", "52:54:00:zz:00:09"],
    ),
    "short mac": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1', '52:54:00:00:09')",
        errors.InvalidTextRepresentation,
        ["macaddr", "52:54:00:00:09"],
    ),
    "multicast mac": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1', '01:00:5e:00:00:01')",
        errors.CheckViolation,
        ["01:00:5e:00:00:01", "interface_mac_unicast"],
    ),
    "hardware type name too long": (
        "INSERT INTO hardware_type (name) VALUES (repeat('x', 256))",
        errors.CheckViolation,
        ["hardware_type", "256 characters", "hardware_type_name_length"],
    ),
    "service name too long": (
        "UPDATE service SET name = repeat('é', 3000)",
        errors.CheckViolation,
        ["service", "3000 characters", "service_name_length"],
    ),
    "duplicate mac": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1', '52:54:00:00:00:01')",
        errors.UniqueViolation,
        ["interface_mac_key", "52:54:00:00:00:01"],
    ),
    "duplicate mac other case": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1', '52-54-00-00-00-01')",
        errors.UniqueViolation,
        ["interface_mac_key"],
    ),
    "duplicate ip": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.10')",
        errors.UniqueViolation,
        ["interface_ip_key", "10.20.0.10"],
    ),
    "hostname with space": (
        "INSERT INTO host (hostname) VALUES ('bad name')",
        errors.CheckViolation,
        ["'bad name'", "host_hostname_rfc1123"],
    ),
    "hostname with quote": (
        """INSERT INTO host (hostname) VALUES ('evil"name')""",
        errors.CheckViolation,
        ['evil"name', "RFC 1123"],
    ),
    "hostname with braces": (
        "INSERT INTO host (hostname) VALUES ('x}{host')",
        errors.CheckViolation,
        ["x}{host", "RFC 1123"],
    ),
    "hostname with semicolon": (
        "INSERT INTO host (hostname) VALUES ('a;b')",
        errors.CheckViolation,
        ["a;b", "RFC 1123"],
    ),
    "hostname with newline": (
        "INSERT INTO host (hostname) VALUES (E'a\\nhost evil')",
        errors.CheckViolation,
        ["RFC 1123"],
    ),
    "hostname non-ascii": (
        "INSERT INTO host (hostname) VALUES ('héllo')",
        errors.CheckViolation,
        ["héllo", "RFC 1123"],
    ),
    "hostname label too long": (
        f"INSERT INTO host (hostname) VALUES ('{'a' * 64}.example')",
        errors.CheckViolation,
        ["a" * 64, "RFC 1123"],
    ),
    "hostname leading hyphen": (
        "INSERT INTO host (hostname) VALUES ('-web')",
        errors.CheckViolation,
        ["'-web'", "RFC 1123"],
    ),
    "hostname empty": (
        "INSERT INTO host (hostname) VALUES ('')",
        errors.CheckViolation,
        ["RFC 1123"],
    ),
    "hostname too long": (
        "INSERT INTO host (hostname) VALUES ('" + ".".join(["a" * 60] * 5) + "')",
        errors.CheckViolation,
        ["RFC 1123"],
    ),
    "hostname duplicate in other case": (
        "INSERT INTO host (hostname) VALUES ('WEB1')",
        errors.UniqueViolation,
        ["host_hostname_lower_key", "web1"],
    ),
    "ip outside every subnet": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '192.0.2.7')",
        errors.CheckViolation,
        ["192.0.2.7", "outside every subnet", "interface_ip_in_subnet"],
    ),
    "ip is network address": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.0')",
        errors.CheckViolation,
        ["10.20.0.0", "network address", "'lan'"],
    ),
    "ip is broadcast address": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.255')",
        errors.CheckViolation,
        ["10.20.0.255", "broadcast address"],
    ),
    "ip in dynamic pool": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.150')",
        errors.CheckViolation,
        ["10.20.0.150", "dynamic pool", "interface_ip_not_in_pool"],
    ),
    "ip with prefix": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.30/24')",
        errors.CheckViolation,
        ["10.20.0.30/24", "single IPv4 address"],
    ),
    "ip of the wrong family": (
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', '2001:db8::1')",
        errors.CheckViolation,
        ["2001:db8::1", "IPv4"],
    ),
    "interface name injection": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, 'eth1; }', '52:54:00:00:00:09')",
        errors.CheckViolation,
        ["eth1; }", "interface_name_safe"],
    ),
    "overlapping subnet": (
        "INSERT INTO subnet (name, network) VALUES ('big', '10.20.0.0/16')",
        errors.CheckViolation,
        ["'big'", "overlaps subnet 'lan'", "subnet_no_overlap"],
    ),
    "duplicate subnet network": (
        "INSERT INTO subnet (name, network) VALUES ('lan-again', '10.20.0.0/24')",
        errors.UniqueViolation,
        ["subnet_network_key", "10.20.0.0/24"],
    ),
    "gateway outside subnet": (
        "INSERT INTO subnet (name, network, gateway) VALUES ('dmz', '10.30.0.0/24', '10.31.0.1')",
        errors.CheckViolation,
        ["10.31.0.1", "subnet_gateway_inside"],
    ),
    "pool outside subnet": (
        "INSERT INTO subnet (name, network, pool_start, pool_end) "
        "VALUES ('dmz', '10.30.0.0/24', '10.30.0.100', '10.30.1.20')",
        errors.CheckViolation,
        ["10.30.1.20", "subnet_pool_inside"],
    ),
    "reversed pool": (
        "INSERT INTO subnet (name, network, pool_start, pool_end) "
        "VALUES ('dmz', '10.30.0.0/24', '10.30.0.200', '10.30.0.100')",
        errors.CheckViolation,
        ["10.30.0.200", "after pool_end", "subnet_pool_order"],
    ),
    "half a pool": (
        "INSERT INTO subnet (name, network, pool_start) VALUES ('dmz', '10.30.0.0/24', '10.30.0.100')",
        errors.CheckViolation,
        ["subnet_pool_complete"],
    ),
    "dns server is a network": (
        "INSERT INTO subnet (name, network, dns_servers) VALUES ('dmz', '10.30.0.0/24', '{10.0.0.0/8}')",
        errors.CheckViolation,
        ["10.0.0.0/8", "subnet_dns_servers_addresses"],
    ),
    "dns server not an address": (
        "INSERT INTO subnet (name, network, dns_servers) VALUES ('dmz', '10.30.0.0/24', '{ns1}')",
        errors.InvalidTextRepresentation,
        ["inet", "ns1"],
    ),
    "domain name injection": (
        """INSERT INTO subnet (name, network, domain_name) VALUES ('dmz', '10.30.0.0/24', 'x"; }')""",
        errors.CheckViolation,
        ["subnet_domain_name_rfc1123"],
    ),
    "negative lease time": (
        "INSERT INTO subnet (name, network, lease_time) VALUES ('dmz', '10.30.0.0/24', -5)",
        errors.CheckViolation,
        ["lease_time", "-5"],
    ),
    "subnet shrink strands an interface": (
        "UPDATE subnet SET network = '10.20.0.0/29', gateway = '10.20.0.1', pool_start = NULL, "
        "pool_end = NULL WHERE name = 'lan'",
        errors.CheckViolation,
        ["'lan'", "10.20.0.10", "outside every subnet"],
    ),
    "subnet pool grows over an interface": (
        "UPDATE subnet SET pool_start = '10.20.0.5' WHERE name = 'lan'",
        errors.CheckViolation,
        ["10.20.0.10", "dynamic pool"],
    ),
    "subnet deleted under its interfaces": (
        "DELETE FROM subnet WHERE name = 'mgmt'",
        errors.CheckViolation,
        ["DELETE of subnet 'mgmt'", "10.21.0.10"],
    ),
    "interface moved into the pool": (
        "UPDATE interface SET ip = '10.20.0.120' WHERE id = 1",
        errors.CheckViolation,
        ["10.20.0.120", "dynamic pool"],
    ),
    "host renamed badly": (
        "UPDATE host SET hostname = 'web 1' WHERE id = 1",
        errors.CheckViolation,
        ["'web 1'", "RFC 1123"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_rejected_clearly_and_changes_nothing(
    db: psycopg.Connection[Any], case: str
) -> None:
    statement, error, fragments = BAD_INPUT[case]
    seed(db)
    before = snapshot(db)
    with pytest.raises(error) as raised:
        db.execute(statement)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(db) == before


# A subnet change that leaves an existing interface on the subnet's network or broadcast
# address: (interface ip in subnet 'lab' 10.30.0.0/24, new network, message fragments)
SUBNET_CHANGES = {
    "shifted so an interface is the network address": (
        "10.30.0.64",
        "10.30.0.64/26",
        ["UPDATE of subnet 'lab' (10.30.0.0/24)", "ip 10.30.0.64 is the network address",
         "(10.30.0.64/26)", "interface_ip_not_network"],
    ),
    "shrunk so an interface is the broadcast address": (
        "10.30.0.63",
        "10.30.0.0/26",
        ["UPDATE of subnet 'lab' (10.30.0.0/24)", "ip 10.30.0.63 is the broadcast address",
         "(10.30.0.0/26)", "interface_ip_not_broadcast"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SUBNET_CHANGES))
def test_subnet_change_may_not_put_an_interface_on_network_or_broadcast(
    db: psycopg.Connection[Any], case: str
) -> None:
    ip, network, fragments = SUBNET_CHANGES[case]
    seed(db)
    db.execute("INSERT INTO subnet (id, name, network) VALUES (3, 'lab', '10.30.0.0/24')")
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth1', '52:54:00:00:00:09', %s)",
        [ip],
    )
    before = snapshot(db)
    with pytest.raises(errors.CheckViolation) as raised:
        db.execute("UPDATE subnet SET network = %s WHERE name = 'lab'", [network])
    assert raised.value.diag.constraint_name == "subnet_keeps_interfaces_valid"
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(db) == before


def test_a_bad_row_in_a_multi_row_insert_rejects_the_whole_statement(
    db: psycopg.Connection[Any],
) -> None:
    seed(db)
    before = snapshot(db)
    with pytest.raises(errors.CheckViolation, match="dynamic pool"):
        db.execute(
            "INSERT INTO interface (host_id, name, mac, ip) VALUES "
            "(2, 'eth1', '52:54:00:00:00:09', '10.20.0.20'), (2, 'eth2', '52:54:00:00:00:0a', '10.20.0.120')"
        )
    assert snapshot(db) == before


def test_valid_edge_values_are_accepted(db: psycopg.Connection[Any]) -> None:
    seed(db)
    db.execute(
        "INSERT INTO host (id, hostname) VALUES (10, 'a'), (11, '"
        + ".".join(["a" * 63] * 3)
        + "'), (12, 'x-1.Example-2.org')"
    )
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES "
        "(10, 'eth0', '52:54:00:00:10:00', '10.20.0.99'), (11, 'bond0.12', '52:54:00:00:11:00', '10.20.0.201'), "
        "(12, 'eth0', '52:54:00:00:12:00', '10.20.0.254')"
    )
    # growing a subnet or moving its pool away from reservations is fine
    db.execute("UPDATE subnet SET network = '10.21.0.0/23' WHERE name = 'mgmt'")
    count = db.execute("SELECT count(*) FROM interface").fetchone()
    assert count == (6,)


def test_concurrent_subnet_change_and_interface_insert_cannot_both_win(db_url: str) -> None:
    """The pool grows over an address while another transaction reserves it: the
    reservation waits for the subnet change and is then rejected."""
    with psycopg.connect(db_url, autocommit=True) as setup:
        seed(setup)
    with psycopg.connect(db_url) as grower, psycopg.connect(db_url, autocommit=True) as writer:
        grower.execute("UPDATE subnet SET pool_start = '10.20.0.40' WHERE name = 'lan'")
        outcome: dict[str, BaseException | None] = {}

        def reserve() -> None:
            try:
                writer.execute(
                    "INSERT INTO interface (host_id, name, mac, ip) "
                    "VALUES (2, 'eth1', '52:54:00:00:00:09', '10.20.0.50')"
                )
                outcome["error"] = None
            except psycopg.Error as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=reserve)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the reservation must wait for the subnet change"
        grower.commit()
        thread.join(10)
        assert isinstance(outcome["error"], errors.CheckViolation)
        assert "dynamic pool" in str(outcome["error"])

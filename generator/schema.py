"""SQLAlchemy models of the machine-database tables (schema ``public``).

The migrations in ``migrations/`` create these tables; a test compares both so they
cannot drift. The rules (triggers) live in the migrations only: the database enforces
them for every client, this code included.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, INET, MACADDR, ExcludeConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["metadata"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Base(DeclarativeBase):
    metadata = MetaData()


metadata = Base.metadata

# Boot options (migration 0007): the same five columns on subnet, hardware_type and
# host; host over hardware type over subnet (docs/dba.md).
BOOT_FILE_COLUMNS = ("boot_file", "boot_file_bios", "boot_file_uefi_x64", "boot_file_uefi_arm64")


def _boot_checks(table: str) -> tuple[CheckConstraint, CheckConstraint]:
    files = " AND ".join(f"machinedb.is_boot_file_name({column})" for column in BOOT_FILE_COLUMNS)
    return (
        CheckConstraint("machinedb.is_next_server(next_server)", name=f"{table}_next_server_ipv4"),
        CheckConstraint(files, name=f"{table}_boot_file_name"),
    )


class BootOptions:
    """The boot option columns; NULL inherits from the next level."""

    next_server: Mapped[IPAddress | None] = mapped_column(INET)
    boot_file: Mapped[str | None] = mapped_column(Text)
    boot_file_bios: Mapped[str | None] = mapped_column(Text)
    boot_file_uefi_x64: Mapped[str | None] = mapped_column(Text)
    boot_file_uefi_arm64: Mapped[str | None] = mapped_column(Text)


class HardwareType(BootOptions, Base):
    __tablename__ = "hardware_type"
    __table_args__ = _boot_checks("hardware_type")

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    vendor: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)


class Host(BootOptions, Base):
    __tablename__ = "host"
    __table_args__ = (
        CheckConstraint("machinedb.is_rfc1123_name(hostname)", name="host_hostname_rfc1123"),
        Index("host_hardware_type_id_idx", "hardware_type_id"),
        *_boot_checks("host"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    hostname: Mapped[str] = mapped_column(Text)
    hardware_type_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("hardware_type.id"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    description: Mapped[str | None] = mapped_column(Text)


# host names are unique whatever their case
Index("host_hostname_lower_key", func.lower(Host.hostname), unique=True)


class Subnet(BootOptions, Base):
    __tablename__ = "subnet"
    __table_args__ = (
        ExcludeConstraint(
            ("network", "&&"), name="subnet_no_overlap", using="gist", ops={"network": "inet_ops"}
        ),
        CheckConstraint("pool_start <= pool_end", name="subnet_pool_order"),
        CheckConstraint("(pool_start IS NULL) = (pool_end IS NULL)", name="subnet_pool_complete"),
        CheckConstraint("lease_time > 0", name="subnet_lease_time_positive"),
        *_boot_checks("subnet"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    network: Mapped[IPNetwork] = mapped_column(CIDR, unique=True)
    gateway: Mapped[IPAddress | None] = mapped_column(INET)
    domain_name: Mapped[str | None] = mapped_column(Text)
    dns_servers: Mapped[list[IPAddress]] = mapped_column(ARRAY(INET), server_default="{}")
    pool_start: Mapped[IPAddress | None] = mapped_column(INET)
    pool_end: Mapped[IPAddress | None] = mapped_column(INET)
    lease_time: Mapped[int | None] = mapped_column(Integer)
    dhcp_enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")


class Interface(Base):
    __tablename__ = "interface"
    __table_args__ = (UniqueConstraint("host_id", "name", name="interface_host_id_name_key"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    host_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("host.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text, server_default="eth0")
    mac: Mapped[str] = mapped_column(MACADDR, unique=True)
    ip: Mapped[IPAddress | None] = mapped_column(INET, unique=True)


class Service(Base):
    __tablename__ = "service"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class HostService(Base):
    __tablename__ = "host_service"
    __table_args__ = (Index("host_service_service_id_idx", "service_id"),)

    host_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("host.id", ondelete="CASCADE"), primary_key=True
    )
    service_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("service.id", ondelete="CASCADE"), primary_key=True
    )


class DhcpServer(Base):
    __tablename__ = "dhcp_server"
    __table_args__ = (
        CheckConstraint("machinedb.is_dhcp_server_name(name)", name="dhcp_server_name_plain"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str | None] = mapped_column(Text)


# server names are unique whatever their case
Index("dhcp_server_name_lower_key", func.lower(DhcpServer.name), unique=True)


class DhcpServerSubnet(Base):
    """Which subnets a DHCP server serves (a subnet may have several: failover peers)."""

    __tablename__ = "dhcp_server_subnet"
    __table_args__ = (Index("dhcp_server_subnet_subnet_id_idx", "subnet_id"),)

    dhcp_server_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dhcp_server.id", ondelete="CASCADE"), primary_key=True
    )
    subnet_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subnet.id", ondelete="CASCADE"), primary_key=True
    )


class DhcpFailover(Base):
    """A failover pair (migrations 0008, 0009): the role is the column a server is named
    in; each server's peer endpoint is stored once; timers in seconds (ISC) or ms (Kea)."""

    __tablename__ = "dhcp_failover"
    __table_args__ = (
        CheckConstraint("machinedb.is_dhcp_server_name(name)", name="dhcp_failover_name_plain"),
        CheckConstraint(
            "mode IN ('isc-failover', 'kea-hot-standby', 'kea-load-balancing')",
            name="dhcp_failover_mode_known",
        ),
        CheckConstraint("primary_server_id <> secondary_server_id", name="dhcp_failover_not_self"),
        CheckConstraint(
            "machinedb.is_ipv4_address(primary_address)"
            " AND machinedb.is_ipv4_address(secondary_address)",
            name="dhcp_failover_address_ipv4",
        ),
        CheckConstraint(
            "primary_port BETWEEN 1 AND 65535 AND secondary_port BETWEEN 1 AND 65535",
            name="dhcp_failover_port_range",
        ),
        CheckConstraint(
            "(primary_address, primary_port) <> (secondary_address, secondary_port)",
            name="dhcp_failover_endpoints_distinct",
        ),
        CheckConstraint(
            "mclt > 0 AND max_response_delay > 0 AND max_unacked_updates > 0"
            " AND load_balance_max_seconds >= 0 AND split BETWEEN 0 AND 256"
            " AND heartbeat_delay_ms > 0 AND max_response_delay_ms > 0 AND max_ack_delay_ms > 0"
            " AND max_unacked_clients >= 0",
            name="dhcp_failover_timers_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    # NULL (the default, migration 0009): the server's own default mode
    mode: Mapped[str | None] = mapped_column(Text)
    primary_server_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dhcp_server.id"), unique=True
    )
    secondary_server_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dhcp_server.id"), unique=True
    )
    primary_address: Mapped[IPAddress] = mapped_column(INET)
    primary_port: Mapped[int] = mapped_column(Integer, server_default="647")
    secondary_address: Mapped[IPAddress] = mapped_column(INET)
    secondary_port: Mapped[int] = mapped_column(Integer, server_default="847")
    mclt: Mapped[int] = mapped_column(Integer, server_default="3600")  # seconds
    max_response_delay: Mapped[int] = mapped_column(Integer, server_default="60")  # seconds
    max_unacked_updates: Mapped[int] = mapped_column(Integer, server_default="10")
    load_balance_max_seconds: Mapped[int] = mapped_column(Integer, server_default="3")
    split: Mapped[int] = mapped_column(Integer, server_default="128")  # of 256
    heartbeat_delay_ms: Mapped[int] = mapped_column(Integer, server_default="10000")
    max_response_delay_ms: Mapped[int] = mapped_column(Integer, server_default="60000")
    max_ack_delay_ms: Mapped[int] = mapped_column(Integer, server_default="5000")
    max_unacked_clients: Mapped[int] = mapped_column(Integer, server_default="5")


# pair names are unique whatever their case
Index("dhcp_failover_name_lower_key", func.lower(DhcpFailover.name), unique=True)

"""Settings a render needs that do not come from the database."""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass

from generator import errors

DEFAULT_LEASE_TIME = 3600  # seconds
MAX_LEASE_TIME = 7200  # seconds
# Debian's kea-dhcp4-server paths, so a packaged Kea finds its files unchanged.
KEA_LEASE_FILE = "/var/lib/kea/kea-leases4.csv"
KEA_CONTROL_SOCKET = "/run/kea/kea4-ctrl-socket"
# Kea 2.2 loads hook libraries by absolute path; Debian installs them per architecture.
KEA_HOOKS_FALLBACK = "/usr/lib/x86_64-linux-gnu/kea/hooks"
# A unix socket path must fit sockaddr_un.sun_path (108 bytes with the NUL).
SOCKET_PATH_LIMIT = 107  # bytes
# Lease times are 32-bit on the wire and in both servers; ISC reads them signed.
LEASE_TIME_LIMIT = 2**31 - 1  # seconds

# Linux interface names (IFNAMSIZ 16), optionally with Kea's "/address" suffix.
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}(/[0-9.]{7,15})?|\*")
_PATH = re.compile(r"/[A-Za-z0-9_./+-]{1,4095}")
_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")
# PostgreSQL names Kea is told in hosts-database (a database and a role), and where it
# connects: a host name or address, or a unix socket directory (an absolute path).
_PG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
_PG_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}|/[A-Za-z0-9_./+-]{0,4094}")


def default_kea_hooks_dir() -> str:
    """Debian's Kea hook directory for this machine's architecture
    (``/usr/lib/<multiarch>/kea/hooks``), or ``KEA_HOOKS_FALLBACK`` where Python does
    not know the multiarch triplet."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if isinstance(multiarch, str) and re.fullmatch(r"[a-z0-9_]+(-[a-z0-9_]+)+", multiarch):
        return f"/usr/lib/{multiarch}/kea/hooks"
    return KEA_HOOKS_FALLBACK


KEA_HOOKS_DIR = default_kea_hooks_dir()


@dataclass(frozen=True, kw_only=True)
class KeaHostsDatabase:
    """How Kea reaches its PostgreSQL hosts database (``hosts-database``), read-only.

    There is no password here, and so none in the rendered file: Kea's libpq takes it
    from the password file its environment names (``PGPASSFILE``), or the server
    needs none (peer authentication over a unix socket).
    """

    name: str
    host: str
    port: int
    user: str

    def __post_init__(self) -> None:
        for label, value in (("database", self.name), ("user", self.user)):
            if not _PG_NAME.fullmatch(value):
                raise errors.InvalidOptions(f"Kea hosts database {label} {value!r} is not valid")
        if not _PG_HOST.fullmatch(self.host):
            raise errors.InvalidOptions(f"Kea hosts database host {self.host!r} is not valid")
        if not 1 <= self.port <= 65535:
            raise errors.InvalidOptions(f"Kea hosts database port {self.port} is not in 1..65535")


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """What the operator configures for the rendered file (not per-row data).

    ``interfaces``, ``lease_file``, ``control_socket`` and ``kea_hooks_dir`` are used
    by Kea only: ISC dhcpd takes its interfaces and lease file on the command line.
    """

    interfaces: tuple[str, ...] = ()
    lease_file: str = KEA_LEASE_FILE
    control_socket: str = KEA_CONTROL_SOCKET
    default_lease_time: int = DEFAULT_LEASE_TIME  # seconds
    max_lease_time: int = MAX_LEASE_TIME  # seconds
    # ISC: dhcpd's OMAPI listener, rendered so the server and the generator agree. The
    # key's statement is included from its file: the secret never enters the config.
    omapi_port: int | None = None
    omapi_key_name: str | None = None
    omapi_key_file: str | None = None
    # Kea: reservations live in this hosts database, not in the file.
    kea_hosts_database: KeaHostsDatabase | None = None
    # Kea HA (a pair in kea-hot-standby or kea-load-balancing mode): where the hook
    # libraries are; Kea 2.2 wants them by absolute path.
    kea_hooks_dir: str = KEA_HOOKS_DIR

    def __post_init__(self) -> None:
        # Coerce a list to a tuple: the object stays hashable and immutable.
        object.__setattr__(self, "interfaces", tuple(self.interfaces))
        for name in self.interfaces:
            if not _INTERFACE.fullmatch(name):
                raise errors.InvalidOptions(f"interface name {name!r} is not valid")
        paths = (
            ("lease file", self.lease_file),
            ("control socket", self.control_socket),
            ("Kea hooks directory", self.kea_hooks_dir),
        )
        for label, path in paths:
            if not _PATH.fullmatch(path):
                raise errors.InvalidOptions(f"{label} {path!r} must be a plain absolute path")
        if len(self.control_socket) > SOCKET_PATH_LIMIT:
            raise errors.InvalidOptions(
                f"control socket path is longer than {SOCKET_PATH_LIMIT} bytes"
            )
        for label, seconds in (
            ("default lease time", self.default_lease_time),
            ("max lease time", self.max_lease_time),
        ):
            if not 1 <= seconds <= LEASE_TIME_LIMIT:
                raise errors.InvalidOptions(f"{label} {seconds} is not in 1..{LEASE_TIME_LIMIT} s")
        self._check_omapi()
        if self.default_lease_time > self.max_lease_time:
            raise errors.InvalidOptions(
                f"default lease time {self.default_lease_time} s exceeds"
                f" max lease time {self.max_lease_time} s"
            )

    def _check_omapi(self) -> None:
        omapi = (self.omapi_port, self.omapi_key_name, self.omapi_key_file)
        if all(value is None for value in omapi):
            return
        if None in omapi:
            raise errors.InvalidOptions("OMAPI needs a port, a key name and a key file")
        if not 1 <= (self.omapi_port or 0) <= 65535:
            raise errors.InvalidOptions(f"OMAPI port {self.omapi_port} is not in 1..65535")
        if not _KEY_NAME.fullmatch(self.omapi_key_name or ""):
            raise errors.InvalidOptions(f"OMAPI key name {self.omapi_key_name!r} is not valid")
        if not _PATH.fullmatch(self.omapi_key_file or ""):
            raise errors.InvalidOptions(
                f"OMAPI key file {self.omapi_key_file!r} must be a plain absolute path"
            )

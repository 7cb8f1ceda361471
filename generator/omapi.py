"""Create, look up, re-address and delete host objects in a running ISC dhcpd over OMAPI.

pypureomapi speaks the protocol (messages, HMAC-MD5 signatures); this module opens the
TCP connection itself, with a timeout on every operation, and turns dhcpd's answers
into ``Host`` values and this package's errors. dhcpd answers a request with an
``update`` message (the object) or a ``status`` message carrying an isc_result_t code.
dhcpd fsyncs every OMAPI create and delete into its lease file and replays them at
start, after the config file (tests/e2e/test_omapi_dhcpd.py records what wins).
A ``Client`` is one connection: use it from one thread at a time.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pypureomapi

from generator import errors, quote

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
READ_KEY_MODE_MASK = 0o004  # a key file readable by everyone is refused
ALGORITHM = "hmac-md5"  # the only algorithm both dhcpd's OMAPI and pypureomapi support
TIMEOUT = 5.0  # seconds for a connect and for each request
KEY_FILE_LIMIT = 65536  # bytes read from a key file at most

_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_ALGORITHM_NAMES = ("hmac-md5", "hmac-md5.sig-alg.reg.int")  # dhcpd accepts both spellings
# Names dhcpd's own parser reads back from its lease file: a brace or a quote in a name
# written there would end the record (dhcpd writes it unquoted).
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_HOST_NAME_MAX = 253
_TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[{};]|[^\s{};"#]+|\S')
_ONE = struct.pack("!I", 1)
_HTYPE_ETHERNET = _ONE

# isc_result_t codes dhcpd answers with (includes/omapip/result.h, libisc's result.h)
SUCCESS = 0
EXISTS = 18
NOTFOUND = 23
KEYCONFLICT = (6 << 16) + 7  # DHCP_R_KEYCONFLICT: the keys name two different hosts


class KeyFileError(errors.GeneratorError, ValueError):
    """The OMAPI key (file) is unusable; the message says why and never holds the secret."""


class OmapiError(errors.GeneratorError):
    """dhcpd refused an OMAPI request, or could not be asked."""


class Unreachable(OmapiError):
    """No authenticated connection: refused, timed out, rejected key, or dropped.

    A change whose answer was lost may or may not have been applied: look it up.
    """


class AlreadyExists(OmapiError):
    """dhcpd already has a host of that name, or with that hardware address."""


@dataclass(frozen=True, kw_only=True)
class Key:
    """A dhcpd ``key`` statement's content."""

    name: str
    algorithm: str
    secret: str = field(repr=False)  # base64

    def __post_init__(self) -> None:
        if _KEY_NAME.fullmatch(self.name) is None:
            raise KeyFileError("key name must be 1-63 letters, digits, '-', '_' or '.'")
        if self.algorithm != ALGORITHM:
            raise KeyFileError(f"key algorithm must be {ALGORITHM} (all dhcpd's OMAPI supports)")
        try:
            raw = base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError("key secret is not valid base64") from None
        if not raw:
            raise KeyFileError("key secret is empty")


@dataclass(frozen=True, kw_only=True)
class Host:
    """A dhcpd host object: a fixed address for one hardware address."""

    name: str
    mac: str  # 'aa:bb:cc:dd:ee:ff', lower case
    ip: str  # dotted IPv4
    hostname: str | None = None  # sent as 'option host-name'; dhcpd does not read it back
    # More statements of the host's scope, as render_isc writes them (boot options:
    # next-server, filename, if option arch ...); sent, not read back. dhcpd cannot
    # change a host's statements in place: a change is a delete and an add.
    statements: str | None = None


def read_key_file(path: str | os.PathLike[str]) -> Key:
    """The key of a file holding one ``key NAME { algorithm hmac-md5; secret "..."; };``."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & READ_KEY_MODE_MASK:
                raise KeyFileError(
                    f"key file {where} is readable by everyone (mode {mode & 0o777:o})"
                )
            data = file.read(KEY_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise KeyFileError(f"key file {where} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"key file {where} is unreadable: {exc.strerror}") from None
    try:
        if len(data) > KEY_FILE_LIMIT:
            raise KeyFileError(f"larger than {KEY_FILE_LIMIT} bytes")
        return _parse_key(data.decode("ascii"))
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {where}: not ASCII text") from None
    except KeyFileError as exc:
        raise KeyFileError(f"key file {where}: {exc}") from None


def _parse_key(text: str) -> Key:
    tokens = [token for token in _TOKEN.findall(text) if not token.startswith("#")]
    if tokens[-1:] == [";"]:
        tokens.pop()
    if (
        len(tokens) < 4
        or (tokens[0], tokens[2], tokens[-1]) != ("key", "{", "}")
        or tokens.count("{") + tokens.count("}") != 2
    ):
        raise KeyFileError('not one statement key NAME { algorithm hmac-md5; secret "..."; };')
    values: dict[str, str] = {}
    body = tokens[3:-1]
    while body:
        statement, body = body[:3], body[3:]
        if len(statement) < 3 or statement[2] != ";" or statement[0] not in ("algorithm", "secret"):
            raise KeyFileError("the key block may hold only 'algorithm ...;' and 'secret ...;'")
        if statement[0] in values:
            raise KeyFileError(f"'{statement[0]}' given twice")
        values[statement[0]] = statement[1].strip('"')
    if set(values) != {"algorithm", "secret"}:
        raise KeyFileError("the key block needs both 'algorithm' and 'secret'")
    algorithm = values["algorithm"].lower().rstrip(".")
    return Key(
        name=tokens[1].strip('"'),
        algorithm=ALGORITHM if algorithm in _ALGORITHM_NAMES else "(other)",
        secret=values["secret"],
    )


class _Transport(pypureomapi.TCPClientTransport):  # type: ignore[misc]  # untyped library
    """pypureomapi's transport on a socket this module connected (and will close)."""

    def __init__(self, protocol: Any, sock: socket.socket) -> None:
        self.protocol = protocol
        self.connection = sock
        protocol.connection_made(self)


class _Session(pypureomapi.Omapi):  # type: ignore[misc]  # untyped library
    """pypureomapi's client without its own connect, which leaks the socket on failure."""

    def __init__(self, sock: socket.socket, key: Key) -> None:
        self.protocol = pypureomapi.OmapiProtocol()
        self.recv_message_queue: list[Any] = []
        self.protocol.startup_completed = lambda: self.recv_message_queue.append(None)
        self.protocol.message_received = self.recv_message_queue.append
        self.transport = _Transport(self.protocol, sock)
        self.recv_protocol_initialization()
        secret = key.secret.encode("ascii")
        self.initialize_authenticator(
            pypureomapi.OmapiHMACMD5Authenticator(key.name.encode("ascii"), secret)
        )


class Client:
    """One OMAPI connection to dhcpd; every method (re)connects when needed.

    A dropped or timed-out connection raises ``Unreachable`` and is closed; the next
    call connects again. ``with Client(...) as client`` connects at once.
    """

    def __init__(self, *, host: str, port: int, key: Key, timeout: float = TIMEOUT) -> None:
        self._address = (host, port)
        self._key = key
        self._timeout = timeout
        self._session: _Session | None = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._session is not None:
            return
        try:
            sock = socket.create_connection(self._address, timeout=self._timeout)
        except OSError as exc:
            raise Unreachable(f"OMAPI {self._where()}: cannot connect: {_reason(exc)}") from exc
        try:
            session = _Session(sock, self._key)
            _prove_key(session)
        except (OSError, pypureomapi.OmapiError) as exc:
            sock.close()
            reason = f"no session with key {self._key.name}: {_reason(exc)}"
            raise Unreachable(f"OMAPI {self._where()}: {reason}") from exc
        self._session = session
        logger.info("OMAPI connected to %s", self._where(), extra={"action": "omapi-connected"})

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def lookup_by_mac(self, mac: str) -> Host | None:
        return self._again(lambda: self._lookup(_mac_keys(mac)))

    def lookup_by_name(self, name: str) -> Host | None:
        return self._again(lambda: self._lookup([(b"name", name.encode("utf-8"))]))

    def add(self, host: Host) -> None:
        """Create ``host``; ``AlreadyExists`` if dhcpd has its name or its MAC."""
        self._again(lambda: self._add(host))

    def delete(self, name: str) -> bool:
        """Delete the host called ``name``; False if dhcpd has no such host."""
        return self._again(lambda: self._delete(name))

    def set_ip(self, name: str, ip: str) -> None:
        """Give the host called ``name`` the fixed address ``ip``, in place."""
        self._again(lambda: self._set_ip(name, ip))

    def _again(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``; if a connection that was open when it began is lost, run it
        once more on a new one: dhcpd was restarted since (by its supervisor, or for a
        subnet change), and a new process answers. The whole operation is repeated, not
        one request: a handle from the old process means nothing to the new one, and an
        add the old one took comes back as "already exists", which callers check."""
        was_open = self._session is not None
        try:
            return operation()
        except Unreachable:
            if not was_open:
                raise
            logger.info("OMAPI connection to %s lost; connecting again", self._where())
            return operation()

    def _add(self, host: Host) -> None:
        if len(host.name) > _HOST_NAME_MAX or _HOST_NAME.fullmatch(host.name) is None:
            raise errors.UnsafeValue(f"not a host declaration name: {host.name!r}")
        values = [(b"name", host.name.encode("ascii")), *_mac_keys(host.mac)]
        values.append((b"ip-address", _packed_ip(host.ip)))
        statements = []
        if host.hostname is not None:
            statements.append(f"option host-name {quote.isc_string(host.hostname)};")
        if host.statements:
            if not host.statements.isprintable() or not host.statements.isascii():
                raise errors.UnsafeValue(f"host {host.name}: statements are not one ASCII line")
            statements.append(host.statements)
        if statements:
            values.append((b"statements", " ".join(statements).encode("ascii")))
        message = pypureomapi.OmapiMessage.open(b"host")
        message.message += [(b"create", _ONE), (b"exclusive", _ONE)]
        message.obj = values
        response = self._request(message)
        if response.opcode != pypureomapi.OMAPI_OP_UPDATE:
            result, text = _status(response)
            if result in (EXISTS, KEYCONFLICT):
                raise AlreadyExists(f"dhcpd already has host {host.name} or MAC {host.mac}: {text}")
            raise OmapiError(f"dhcpd refused to add host {host.name}: {text}")
        logger.debug("OMAPI added host %s (%s %s)", host.name, host.mac, host.ip)

    def _delete(self, name: str) -> bool:
        handle = self._handle(name)
        if handle is None:
            return False
        self._expect_success(pypureomapi.OmapiMessage.delete(handle), f"delete host {name}")
        logger.debug("OMAPI deleted host %s", name)
        return True

    def _set_ip(self, name: str, ip: str) -> None:
        handle = self._handle(name)
        if handle is None:
            raise OmapiError(f"dhcpd has no host {name} to give address {ip}")
        message = pypureomapi.OmapiMessage.update(handle)
        message.obj = [(b"ip-address", _packed_ip(ip))]
        self._expect_success(message, f"set the address of host {name} to {ip}")
        logger.debug("OMAPI set host %s to %s", name, ip)

    def _lookup(self, keys: list[tuple[bytes, bytes]]) -> Host | None:
        response = self._open(keys)
        return None if response is None else _host(dict(response.obj))

    def _handle(self, name: str) -> int | None:
        response = self._open([(b"name", name.encode("utf-8"))])
        return None if response is None else int(response.handle)

    def _open(self, keys: list[tuple[bytes, bytes]]) -> Any:
        """dhcpd's update message for the host ``keys`` select, or None if there is none."""
        message = pypureomapi.OmapiMessage.open(b"host")
        message.obj = keys
        response = self._request(message)
        if response.opcode == pypureomapi.OMAPI_OP_UPDATE:
            return response
        result, text = _status(response)
        if result == NOTFOUND:
            return None
        raise OmapiError(f"dhcpd refused a host lookup: {text}")

    def _expect_success(self, message: Any, what: str) -> None:
        result, text = _status(self._request(message))
        if result != SUCCESS:
            raise OmapiError(f"dhcpd refused to {what}: {text}")

    def _request(self, message: Any) -> Any:
        self.connect()
        assert self._session is not None
        try:
            return self._session.query_server(message)
        except (OSError, pypureomapi.OmapiError) as exc:
            self.close()
            raise Unreachable(f"OMAPI {self._where()}: connection lost: {_reason(exc)}") from exc

    def _where(self) -> str:
        return f"{self._address[0]}:{self._address[1]}"


def _prove_key(session: _Session) -> None:
    """dhcpd answers the authenticator's open unsigned: only a signed request proves the
    secret. A wrong one gets an unsigned "invalid key" status."""
    probe = pypureomapi.OmapiMessage.open(b"host")
    probe.obj = [(b"name", b"")]  # no host has an empty name: a cheap NOTFOUND
    session.send_message(probe)
    response = session.receive_response(probe, insecure=True)
    if response.authid != session.protocol.defauth:
        raise pypureomapi.OmapiError(f"dhcpd rejected the signature: {_status(response)[1]}")


def _status(response: Any) -> tuple[int, str]:
    """The result code of a status message and its text, e.g. (18, 'already exists (18)')."""
    if response.opcode != pypureomapi.OMAPI_OP_STATUS:
        return -1, f"unexpected {pypureomapi.repr_opcode(response.opcode)} answer"
    fields = dict(response.message)
    raw = fields.get(b"result", b"")
    result = struct.unpack("!I", raw)[0] if len(raw) == 4 else -1
    text = fields.get(b"message", b"").decode("utf-8", "replace") or "no message"
    return result, f"{text} (result {result})"


def _host(values: dict[bytes, bytes]) -> Host:
    try:
        return Host(
            name=values[b"name"].decode("utf-8", "replace"),
            mac=pypureomapi.unpack_mac(values[b"hardware-address"]),
            ip=pypureomapi.unpack_ip(values[b"ip-address"]),
        )
    except (KeyError, ValueError) as exc:  # e.g. a host of the file without fixed-address
        raise OmapiError(f"dhcpd's host object lacks a usable name, MAC or address: {exc}") from exc


def _mac_keys(mac: str) -> list[tuple[bytes, bytes]]:
    packed = bytes.fromhex(quote.hardware_address(mac).replace(":", ""))
    return [(b"hardware-address", packed), (b"hardware-type", _HTYPE_ETHERNET)]


def _packed_ip(ip: str) -> bytes:
    try:
        return ipaddress.IPv4Address(ip).packed
    except ValueError as exc:
        raise errors.UnsafeValue(f"not an IPv4 address: {ip!r}") from exc


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

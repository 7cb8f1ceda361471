"""generator.omapi without dhcpd: key files, and error translation against a fake server.

The fake speaks real OMAPI (pypureomapi's own message classes) on 127.0.0.1 and
answers the way dhcpd does (tests/e2e/test_omapi_dhcpd.py checks dhcpd itself):
an unsigned answer to the authenticator's open, an unsigned "invalid key" status to a
badly signed request, status 18 for an exclusive create of a taken name or MAC, 23 for
a lookup that finds nothing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypureomapi
import pytest

from generator import errors, omapi

SECRET = "c2VjcmV0LWZvci11bml0LXRlc3Rz"  # base64
KEY = omapi.Key(name="omapi_key", algorithm="hmac-md5", secret=SECRET)
MAC = "02:00:5e:10:00:01"


# --- key files -----------------------------------------------------------------------


def write_key(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "omapi.key"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "text",
    [
        f'key omapi_key {{ algorithm hmac-md5; secret "{SECRET}"; }};',
        f'# made by hand\nkey "omapi_key" {{\n  secret "{SECRET}";  # the secret\n'
        "  algorithm HMAC-MD5.SIG-ALG.REG.INT.;\n}\n",
        f"key omapi_key{{algorithm hmac-md5;secret {SECRET};}}",
    ],
)
def test_a_key_file_is_read(tmp_path: Path, text: str) -> None:
    assert omapi.read_key_file(write_key(tmp_path, text)) == KEY


def test_the_secret_stays_out_of_repr_and_str() -> None:
    assert SECRET not in repr(KEY) and SECRET not in str(KEY)
    assert "omapi_key" in repr(KEY)


@pytest.mark.parametrize(
    ("text", "mode", "reason"),
    [
        (f'key k {{ algorithm hmac-md5; secret "{SECRET}"; }};', 0o644, "readable by everyone"),
        (f'key k {{ algorithm hmac-sha256; secret "{SECRET}"; }};', 0o600, "must be hmac-md5"),
        ('key k { algorithm hmac-md5; secret "not base64!"; };', 0o600, "not valid base64"),
        ('key k { algorithm hmac-md5; secret ""; };', 0o600, "empty"),
        ("key k { algorithm hmac-md5; };", 0o600, "needs both"),
        (f'key k {{ secret "{SECRET}"; secret "{SECRET}"; }};', 0o600, "given twice"),
        (f'key k {{ secret "{SECRET}" "{SECRET}"; }};', 0o600, "only 'algorithm"),
        (f'key k {{ algorithm hmac-md5; secret "{SECRET}"; }}; key j {{ }};', 0o600, "not one"),
        (f'key "k;x" {{ algorithm hmac-md5; secret "{SECRET}"; }};', 0o600, "key name"),
        (f'secret "{SECRET}";', 0o600, "not one statement"),
        ("", 0o600, "not one statement"),
    ],
)
def test_a_bad_key_file_is_refused_in_one_line_without_the_secret(
    tmp_path: Path, text: str, mode: int, reason: str
) -> None:
    with pytest.raises(omapi.KeyFileError, match=reason) as caught:
        omapi.read_key_file(write_key(tmp_path, text, mode))
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message and str(tmp_path) in message
    assert isinstance(caught.value, errors.GeneratorError) and isinstance(caught.value, ValueError)


def test_a_missing_or_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(omapi.KeyFileError, match="does not exist"):
        omapi.read_key_file(tmp_path / "absent.key")
    with pytest.raises(omapi.KeyFileError, match="unreadable"):
        omapi.read_key_file(tmp_path)  # a directory (root reads any file, whatever its mode)


# --- a fake dhcpd --------------------------------------------------------------------

OK, EXISTS, NOTFOUND, INVALIDKEY = 0, 18, 23, (6 << 16) + 11


class FakeDhcpd:
    """Serves one connection at a time; ``mode`` 'serve', 'silent' or 'drop' (close
    the connection at the next request after the handshake)."""

    def __init__(self, key: omapi.Key = KEY) -> None:
        self.auth = pypureomapi.OmapiHMACMD5Authenticator(key.name.encode(), key.secret.encode())
        self.auth.authid = 1
        self.key_name = key.name.encode()
        self.mode = "serve"
        self.hosts: dict[bytes, dict[bytes, bytes]] = {}  # name -> attributes
        self.handles: dict[int, bytes] = {}
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):  # wake the accept() up
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self.thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError, EOFError):
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        inbuf = pypureomapi.InBuffer()
        conn.sendall(pypureomapi.OmapiStartupMessage().as_string())
        read(conn, inbuf, inbuf.parse_startup_message)
        while True:
            request = read(conn, inbuf, inbuf.parse_message)
            if request.authid == 0:  # the authenticator's open: answered unsigned
                if dict(request.obj).get(b"name") != self.key_name:
                    self._reply(conn, request, status=NOTFOUND, signed=False)
                    continue
                self._reply(
                    conn, request, opcode=pypureomapi.OMAPI_OP_UPDATE, handle=1, signed=False
                )
                continue
            if not request.verify({1: self.auth}):
                self._reply(conn, request, status=INVALIDKEY, signed=False)
                continue
            if self.mode == "drop":
                return
            if self.mode == "drop-once":  # as a restarted dhcpd: this connection is gone
                self.mode = "serve"
                return
            if self.mode == "silent":
                self.stopped.wait(5)
                return
            self._answer(conn, request)

    def _answer(self, conn: socket.socket, request: Any) -> None:
        flags, keys = dict(request.message), dict(request.obj)
        if request.opcode == pypureomapi.OMAPI_OP_OPEN:
            name = keys.get(b"name")
            found = name if name in self.hosts else None
            if found is None and b"hardware-address" in keys:
                mac = keys[b"hardware-address"]
                found = next(
                    (n for n, h in self.hosts.items() if h[b"hardware-address"] == mac), None
                )
            if b"create" in flags:
                if found is not None:
                    return self._reply(conn, request, status=EXISTS, text="already exists")
                self.hosts[keys[b"name"]] = keys
                found = keys[b"name"]
            if found is None:
                return self._reply(conn, request, status=NOTFOUND, text="no object matches")
            handle = len(self.handles) + 100
            self.handles[handle] = found
            obj = list(self.hosts[found].items())
            return self._reply(
                conn, request, opcode=pypureomapi.OMAPI_OP_UPDATE, handle=handle, obj=obj
            )
        name = self.handles[request.handle]
        if request.opcode == pypureomapi.OMAPI_OP_UPDATE:
            self.hosts[name].update(dict(request.obj))
        elif request.opcode == pypureomapi.OMAPI_OP_DELETE:
            del self.hosts[name]
        return self._reply(conn, request, status=OK)

    def _reply(
        self,
        conn: socket.socket,
        request: Any,
        *,
        opcode: int = pypureomapi.OMAPI_OP_STATUS,
        status: int | None = None,
        text: str = "",
        handle: int = 0,
        obj: list[tuple[bytes, bytes]] | None = None,
        signed: bool = True,
    ) -> None:
        message = []
        if status is not None:
            message = [(b"result", struct.pack("!I", status)), (b"message", text.encode())]
        answer = pypureomapi.OmapiMessage(
            opcode=opcode, handle=handle, tid=-1, rid=request.tid, message=message, obj=obj
        )
        if signed:
            answer.sign(self.auth)
        conn.sendall(answer.as_string())


def read(conn: socket.socket, inbuf: Any, parser_of: Any) -> Any:
    parser = parser_of()
    while (result := next(parser)) is None:
        data = conn.recv(4096)
        if not data:
            raise EOFError
        inbuf.feed(data)
    inbuf.resetsize()
    return result


@pytest.fixture
def fake() -> Iterator[FakeDhcpd]:
    server = FakeDhcpd()
    yield server
    server.stop()


def client(fake: FakeDhcpd, key: omapi.Key = KEY, timeout: float = 2.0) -> omapi.Client:
    return omapi.Client(host="127.0.0.1", port=fake.port, key=key, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the client ----------------------------------------------------------------------


def test_add_lookup_set_ip_delete(fake: FakeDhcpd) -> None:
    with client(fake) as c:
        assert c.lookup_by_mac(MAC) is None and c.lookup_by_name("web1") is None
        c.add(omapi.Host(name="web1", mac=MAC.upper(), ip="10.0.0.5", hostname='we"b1'))
        expected = omapi.Host(name="web1", mac=MAC, ip="10.0.0.5")
        assert c.lookup_by_mac(MAC) == expected and c.lookup_by_name("web1") == expected
        sent = fake.hosts[b"web1"]
        assert sent[b"statements"] == b'option host-name "we\\"b1";'
        assert sent[b"hardware-type"] == struct.pack("!I", 1)
        with pytest.raises(omapi.AlreadyExists, match="web1"):
            c.add(omapi.Host(name="web1", mac="02:00:5e:10:00:02", ip="10.0.0.6"))
        c.set_ip("web1", "10.0.0.7")
        assert c.lookup_by_name("web1") == omapi.Host(name="web1", mac=MAC, ip="10.0.0.7")
        assert c.delete("web1") is True
        assert c.delete("web1") is False
        with pytest.raises(omapi.OmapiError, match="no host web1"):
            c.set_ip("web1", "10.0.0.8")
    assert fake.connections == 1


def test_boot_statements_follow_the_host_name(fake: FakeDhcpd) -> None:
    boot = 'next-server 10.0.0.2; if option arch = 00:07 { filename "grubx64.efi"; }'
    with client(fake) as c:
        c.add(omapi.Host(name="web1", mac=MAC, ip="10.0.0.5", hostname="web1", statements=boot))
        c.add(omapi.Host(name="db1", mac="02:00:5e:10:00:09", ip="10.0.0.9", statements=boot))
    assert fake.hosts[b"web1"][b"statements"] == b'option host-name "web1"; ' + boot.encode()
    assert fake.hosts[b"db1"][b"statements"] == boot.encode()


@pytest.mark.parametrize(
    "host",
    [
        omapi.Host(name="web1 { deleted; }", mac=MAC, ip="10.0.0.5"),
        omapi.Host(name="web1", mac="02:00:5e", ip="10.0.0.5"),
        omapi.Host(name="web1", mac=MAC, ip="10.0.0.256"),
        omapi.Host(name="web1", mac=MAC, ip="10.0.0.5", hostname="x" * 300),
        omapi.Host(name="web1", mac=MAC, ip="10.0.0.5", statements='filename "a";\n}'),
        omapi.Host(name="web1", mac=MAC, ip="10.0.0.5", statements='filename "é";'),
    ],
)
def test_unsafe_values_are_refused_before_anything_is_sent(
    fake: FakeDhcpd, host: omapi.Host
) -> None:
    with client(fake) as c, pytest.raises(errors.UnsafeValue):
        c.add(host)
    assert fake.hosts == {}


def test_a_refused_connection_is_unreachable() -> None:
    with pytest.raises(omapi.Unreachable, match="cannot connect"):
        omapi.Client(host="127.0.0.1", port=free_port(), key=KEY).connect()


@pytest.mark.parametrize(
    "key",
    [
        omapi.Key(name="omapi_key", algorithm="hmac-md5", secret="d3Jvbmc="),
        omapi.Key(name="other", algorithm="hmac-md5", secret=SECRET),
    ],
)
def test_a_rejected_key_is_unreachable_at_connect(fake: FakeDhcpd, key: omapi.Key) -> None:
    with pytest.raises(omapi.Unreachable, match="no session with key") as caught:
        client(fake, key).connect()
    assert SECRET not in str(caught.value)


def test_a_silent_server_times_out_as_unreachable(fake: FakeDhcpd) -> None:
    c = client(fake, timeout=0.3)
    c.connect()
    fake.mode = "silent"
    started = time.monotonic()
    with pytest.raises(omapi.Unreachable, match="timed out"):
        c.lookup_by_mac(MAC)
    assert time.monotonic() - started < 2.0


def test_a_dropped_connection_is_unreachable_and_the_next_call_reconnects(fake: FakeDhcpd) -> None:
    c = client(fake)
    c.connect()
    c.connect()  # idempotent
    fake.mode = "drop"
    with pytest.raises(omapi.Unreachable, match="connection closed"):
        c.lookup_by_name("web1")  # lost, connected again, lost again: given up
    assert fake.connections == 2
    fake.mode = "serve"
    assert c.lookup_by_name("web1") is None
    assert fake.connections == 3
    c.close()
    c.close()


def test_a_call_on_a_connection_the_server_dropped_is_run_again_once(fake: FakeDhcpd) -> None:
    """dhcpd restarted since the last call: the old connection is dead, a new one works."""
    c = client(fake)
    c.connect()
    fake.mode = "drop-once"
    assert c.lookup_by_name("web1") is None
    assert fake.connections == 2
    c.close()
    fake.mode = "drop"  # a call that connects afresh and fails is not run again
    with pytest.raises(omapi.Unreachable):
        c.lookup_by_name("web1")
    assert fake.connections == 3

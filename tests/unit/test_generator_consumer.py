"""consumer.connect: a broker that drops the connection during the handshake is reported
at once, not after the whole connect timeout (a broker killed mid-handshake)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from generator import consumer
from machinedb import stomp_url


@pytest.fixture
def hangs_up_after_connect() -> Iterator[int]:
    """A TCP server that reads the CONNECT frame and closes without answering."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # so the thread sees ``done``: close() does not wake accept()
    port = server.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        with server:
            while not done.is_set():
                try:
                    peer, _ = server.accept()
                except TimeoutError:
                    continue
                with peer:
                    peer.settimeout(5)
                    peer.recv(4096)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    done.set()
    thread.join(5)


def test_a_connection_lost_during_the_handshake_fails_fast(hangs_up_after_connect: int) -> None:
    subscriber = consumer.Consumer(
        broker=stomp_url.parse(f"stomp://127.0.0.1:{hangs_up_after_connect}"),
        queue_name="/queue/Consumer.t.VirtualTopic.x",
        prefetch=1,
    )
    started = time.monotonic()
    with pytest.raises(consumer.BrokerUnavailable, match=r"lost|could not connect"):
        subscriber.connect(timeout=10.0)
    elapsed = time.monotonic() - started
    subscriber.close()
    assert elapsed < 5.0, f"waited {elapsed:.1f} s of the 10 s timeout"
    assert not subscriber.connected

"""services.free_port: ports to listen on come from below the ephemeral range, where
no outgoing connection can take one between the pick and the daemon's bind; picks of
one process differ, and a port in use is skipped."""

from __future__ import annotations

import socket

import services


def test_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low = services._ephemeral_low()
    ports = [services.free_port() for _ in range(5)]
    assert len(set(ports)) == 5
    for port in ports:
        assert services.PORT_BASE <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: a listener can take it


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", services.free_port() + 1))  # the next port of the band
        holder.listen()
        taken = holder.getsockname()[1]
        assert services._in_use(taken)
        assert services.free_port() != taken

"""The ports the harness hands out for its processes to listen on."""

from __future__ import annotations

import socket
from pathlib import Path

from inference_devkit.loopback import LOWEST_PORT, free_port


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_a_free_port_is_never_one_the_kernel_gives_an_outgoing_connection() -> None:
    # Between free_port() and the caller's bind, any client socket on the machine may be
    # given a port from the ephemeral range: a port from there can be taken (CI saw a
    # gateway fail with "Address already in use").
    low = _ephemeral_start()
    ports = {free_port() for _ in range(200)}
    assert all(LOWEST_PORT <= port < low for port in ports), sorted(ports)
    assert len(ports) > 150  # spread at random: parallel callers rarely agree


def test_a_free_port_can_be_listened_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()

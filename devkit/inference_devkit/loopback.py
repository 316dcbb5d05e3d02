"""Loopback helpers shared by the local control plane, the dev stack, tests and benches."""

from __future__ import annotations

import random
import socket
import urllib.request
from pathlib import Path

# For loopback URLs: never through a proxy from the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Ports handed out lie between this and the start of the kernel's ephemeral range.
LOWEST_PORT = 10000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after).

    Chosen at random below the kernel's ephemeral range: the kernel gives every outgoing
    connection (and every bind to port 0) a port from that range, so on a busy machine one
    of them could take a port found there between this check and the caller's bind. At
    random, so that processes asking at the same moment rarely pick the same one."""
    ceiling = _ephemeral_start()
    if ceiling - LOWEST_PORT >= 1000:
        for _ in range(200):
            port = _random.randrange(LOWEST_PORT, ceiling)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

"""Many endpoints at once: all become Ready, and the operator's connections to the API
server stay within their bound (each TLS connection costs a 256 KiB read buffer; before
the bound, a burst opened one per object and the memory stayed)."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from pathlib import Path

from inference_devkit.waiting import poll
from inference_operator.controller.kube import REQUEST_CONNECTIONS
from inference_operator.controller.login import WATCHED_RESOURCES
from resources import endpoint, secret

BURST = 150


def api_server_connections(pid: int, port: int) -> int:
    """The process's TCP connections to ``port`` (its own sockets only: the inodes of its
    file descriptors, looked up in the connection table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


def test_a_burst_of_endpoints_is_served_over_a_bounded_number_of_connections(
        stack, kubectl, namespace, control_plane):
    port = urllib.parse.urlsplit(control_plane.server).port
    operator = stack.services["operator"]
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], api_server_connections(operator.pid, port))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        kubectl.apply([secret("anthropic"), *(
            endpoint(f"burst-{i}", inference_id=f"{namespace}-burst-{i}")
            for i in range(BURST))], namespace)

        def all_ready() -> bool:
            items = json.loads(kubectl.run("get", "iep", "-n", namespace, "-o", "json").stdout)[
                "items"]
            return len(items) == BURST and all(
                any(c["type"] == "Ready" and c["status"] == "True"
                    for c in (o.get("status") or {}).get("conditions") or ())
                for o in items)

        poll(all_ready, timeout=120, interval=0.5)
    finally:
        stop.set()
        sampler.join()
    # kopf's pool (its cluster-wide watches plus requests) and the operator's own client.
    bound = WATCHED_RESOURCES + REQUEST_CONNECTIONS + REQUEST_CONNECTIONS
    assert 0 < peak[0] <= bound, f"{peak[0]} connections to the API server at once"

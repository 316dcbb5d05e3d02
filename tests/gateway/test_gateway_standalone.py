"""``inference-operator gateway`` started as docs/gateway.md shows it: a real process,
ready as soon as it listens, its state file loaded by then."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway_support import ADMIN_TOKEN, RunningEmulator, gateway_process, seed_body

from inference_devkit.loopback import free_port

READY_WITHIN = 2.0  # seconds from the process's start: a bound of the wait, not a timing
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, dict]:
    try:
        with _DIRECT.open(url, timeout=1) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ready_status(url: str) -> int | None:
    try:
        return _get(url)[0]
    except (urllib.error.URLError, OSError):
        return None  # not listening yet


def test_the_documented_command_is_ready_once_it_listens(emulator: RunningEmulator,
                                                         tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(ADMIN_TOKEN)
    state = tmp_path / "state.json"
    stored = {**seed_body(), "inference_id": "restored", "task_type": "completion"}
    state.write_text(json.dumps({"version": 1, "endpoints": [stored]}))
    port, admin_port = free_port(), free_port()
    gateway = gateway_process(
        tmp_path / "gateway.log", "--port", str(port), "--admin-port", str(admin_port),
        "--admin-token-file", str(token), "--anthropic-base-url", emulator.url,
        "--state-file", str(state))
    started = time.monotonic()
    gateway.start()
    try:
        status = None
        while time.monotonic() - started < READY_WITHIN and status != 200:
            assert gateway.running(), gateway.log_tail()
            status = _ready_status(f"http://127.0.0.1:{port}/readyz")
            if status != 200:
                time.sleep(0.02)
        assert status == 200, f"not ready within {READY_WITHIN:g}s\n{gateway.log_tail()}"
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, {"ready": True})
        # Ready means loaded: the state file's endpoint is served.
        _, listing = _get(f"http://127.0.0.1:{port}/_inference")
        assert [e["inference_id"] for e in listing["endpoints"]] == ["restored"]
    finally:
        gateway.stop()
    assert gateway.popen is not None and gateway.popen.returncode == 0, gateway.log_tail()

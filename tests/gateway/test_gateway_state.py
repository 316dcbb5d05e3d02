"""The state file keeps endpoints across a restart; written atomically with mode 0600."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gateway_support import API_KEY, GatewayFactory, seed_body


async def test_restart_keeps_endpoints(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    state = tmp_path / "state" / "endpoints.json"
    first = await make_gateway(state_file=state)
    await first.put("kept")
    await first.put("gone")
    await first.call("PUT", "/_inference/kept/_update", {"task_settings": {"max_tokens": 9}},
                     admin=True)
    await first.call("DELETE", "/_inference/gone", admin=True)
    _, _, before = await first.call("GET", "/_inference")
    await first.server.stop()

    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert [p.name for p in state.parent.iterdir()] == ["endpoints.json"]  # no temp files left
    record = json.loads(state.read_text())
    assert record["version"] == 1
    assert record["endpoints"][0]["service_settings"]["api_key"] == API_KEY

    second = await make_gateway(state_file=state)
    _, _, after = await second.call("GET", "/_inference")
    assert after == before
    assert after["endpoints"][0]["task_settings"] == {"max_tokens": 9}
    status, _, payload = await second.call("POST", "/_inference/kept", {"input": "again"})
    assert status == 200 and payload["completion"][0]["result"].endswith("again")


async def test_state_file_mode_survives_a_loose_umask(make_gateway: GatewayFactory,
                                                      tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        state = tmp_path / "s.json"
        gateway = await make_gateway(state_file=state)
        await gateway.put(body=seed_body())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

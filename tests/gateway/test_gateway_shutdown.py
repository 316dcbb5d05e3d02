"""Graceful termination of a real gateway process: on SIGTERM it is not ready at once but
keeps serving, every answer with ``Connection: close``, for ``--shutdown-delay``; then it
stops listening, lets what is in flight finish (a stream started before the signal
included) and exits 0."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
from gateway_support import ADMIN_TOKEN, RunningEmulator, seed_body, sse_events, start_gateway

from inference_devkit.devstack.processes import Stack
from inference_devkit.waiting import poll_async

COMPLETION = "/_inference/completion/anthropic_completion"
DELAY = 2.0


async def test_sigterm_drains_then_exits_zero(process_stack: Stack,
                                              emulator: RunningEmulator) -> None:
    gateway = await start_gateway(process_stack, "--shutdown-delay", str(DELAY))
    public = process_stack.gateway_url
    async with aiohttp.ClientSession() as session:
        async with session.put(process_stack.admin_url + COMPLETION, json=seed_body(),
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200, await r.text()
        # About 12 deltas 0.4 s apart: the stream outlasts the delay by a few seconds.
        emulator.latency(per_token=0.4)
        stream = await session.post(public + COMPLETION + "/_stream", json={"input": "bye"})
        assert stream.status == 200
        first = await stream.content.readuntil(b"\n\n")  # under way before the signal
        assert first.startswith(b"event: message")

        gateway.popen.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async def unready() -> bool:
            async with session.get(public + "/readyz") as r:
                return r.status == 503 and r.headers.get("Connection") == "close"

        await poll_async(unready, timeout=0.5, interval=0.02,
                         message="/readyz not 503 right after SIGTERM")
        emulator.latency()
        async with session.post(public + COMPLETION, json={"input": "still there?"}) as r:
            assert r.status == 200, await r.text()
            assert r.headers.get("Connection") == "close"  # keep-alive clients move on
        assert time.monotonic() - signalled < DELAY

        # After the delay: no more listening, while the stream goes on.
        await asyncio.sleep(DELAY + 0.3 - (time.monotonic() - signalled))
        assert gateway.running()
        try:
            async with aiohttp.ClientSession() as fresh, fresh.get(public + "/healthz"):
                refused = False
        except aiohttp.ClientConnectionError:
            refused = True
        assert refused, "still listening after the shutdown delay"

        rest = await stream.read()
        stream.release()
    events = sse_events((first + rest).decode())
    assert events[-1] == ("message", "[DONE]") and len(events) > 5, events
    assert await asyncio.to_thread(gateway.popen.wait, 20) == 0

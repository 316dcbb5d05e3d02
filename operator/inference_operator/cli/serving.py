"""Run an asyncio server until SIGINT/SIGTERM, for the long-running subcommands."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable


def setup_logging(level: str) -> None:
    # The Kubernetes client's HTTP libraries are kept quiet where it is (kubeclient.py);
    # the product has no other HTTP client that logs (the SDK is for tests only).
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_until_signal(start: Callable[[], Awaitable[None]],
                     stop: Callable[[], Awaitable[None]]) -> int:
    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await start()
        try:
            await stopping.wait()
        finally:
            await stop()

    asyncio.run(main())
    return 0

"""Run an asyncio server until SIGINT/SIGTERM, for the long-running subcommands."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

# Per-request INFO lines from the SDK's HTTP stack would drown everything else.
_QUIET_LOGGERS = ("anthropic", "httpx2", "httpx", "httpcore2", "httpcore")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


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

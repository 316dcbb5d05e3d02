"""The one poll loop: call a probe until it answers or the time is up. Shared by the local
control plane, the dev stack's processes, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def poll(probe: Callable[[], T], *, timeout: float = 30, interval: float = 0.1,
         message: str = "condition not met") -> T:
    """Call ``probe`` until it returns something truthy, and return that; TimeoutError
    otherwise. An exception from ``probe`` ends the wait at once (e.g. "it exited")."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{message} within {timeout:g}s (last: {last!r})")


async def poll_async(probe: Callable[[], Coroutine[Any, Any, T]], *,
                     timeout: float = 30,  # noqa: ASYNC109 (as poll's; poll keeps the time)
                     interval: float = 0.1, message: str = "condition not met") -> T:
    """``poll`` for a coroutine probe, without blocking the caller's event loop: the same
    loop runs in a worker thread and each probe runs on the caller's loop."""
    loop = asyncio.get_running_loop()
    abandoned = threading.Event()

    def call() -> T:
        if abandoned.is_set():
            raise asyncio.CancelledError
        return asyncio.run_coroutine_threadsafe(probe(), loop).result()

    try:
        return await asyncio.to_thread(
            poll, call, timeout=timeout, interval=interval, message=message)
    except asyncio.CancelledError:
        abandoned.set()
        raise

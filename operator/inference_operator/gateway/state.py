"""The state file: every endpoint as its PUT body (with the key), so a restart loses none.

Written atomically (temp file in the same directory, fsync, rename, fsync of the
directory) with mode 0600, since it holds API keys."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: unsupported state file version {data.get('version')!r}")
        return list(data["endpoints"])

    async def save(self, endpoints: list[dict[str, Any]]) -> None:
        # Serialised, so the file on disk always ends as the last snapshot handed in.
        async with self._lock:
            await asyncio.to_thread(self._write, endpoints)

    def _write(self, endpoints: list[dict[str, Any]]) -> None:
        payload = json.dumps({"version": FORMAT_VERSION, "endpoints": endpoints}, indent=2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 before anything is written to it.
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

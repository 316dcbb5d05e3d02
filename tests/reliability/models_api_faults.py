"""A real HTTP hop between the operator and the emulator that answers the Models API
(``GET /v1/models/{id}``) with scripted upstream errors for chosen model ids.

Why not the emulator's own fault script: it applies to ``/v1/messages`` only, and the
emulator is out of bounds for this suite's authors. Everything else, including Models API
calls for other model ids, is forwarded to the emulator unchanged, so the operator talks
to a real server over a real socket either way. Error bodies are the emulator's own
(Anthropic's wire format), so the SDK reads them exactly as it reads the real API's.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from inference_devkit.loopback import free_port
from inference_operator.emulator import wire

# Headers that describe one hop's framing; the forwarded response gets its own.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class ModelsApiFaults:
    upstream: str  # the emulator's base URL
    port: int = field(default_factory=free_port)
    # model id -> endless cycle of statuses to answer with, until ``recover``
    _failing: dict[str, Iterator[int]] = field(default_factory=dict)
    _answered: list[tuple[str, int]] = field(default_factory=list)  # (model id, status)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting (called from the test's thread) ----------------------------------------

    def fail(self, model_id: str, *statuses: int) -> None:
        """Answer every Models API call for ``model_id`` with these statuses in turn,
        round and round, until ``recover``: the operator's retries never outrun it."""
        with self._lock:
            self._failing[model_id] = itertools.cycle(statuses)

    def recover(self, model_id: str) -> None:
        with self._lock:
            self._failing.pop(model_id, None)

    def answered(self, model_id: str) -> list[int]:
        """The statuses the Models API calls for ``model_id`` got, in order."""
        with self._lock:
            return [status for model, status in self._answered if model == model_id]

    # -- the server -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info.get("model_id")
        if model_id is not None:
            with self._lock:
                statuses = self._failing.get(model_id)
                status = next(statuses) if statuses is not None else None
            if status is not None:
                with self._lock:
                    self._answered.append((model_id, status))
                body = wire.error_body(status, f"injected {status} for {model_id}")
                return web.json_response(
                    body, status=status, headers={"request-id": body["request_id"]})
        response = await self._forward(request)
        if model_id is not None:
            with self._lock:
                self._answered.append((model_id, response.status))
        return response

    async def _forward(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, f"{self.upstream}{request.path_qs}", headers=headers,
            data=await request.read(),
        ) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items()
                    if k.lower() not in _HOP_HEADERS}
            return web.Response(status=upstream.status, body=body, headers=kept)

    def __enter__(self) -> ModelsApiFaults:
        app = web.Application()
        app.router.add_get("/v1/models/{model_id}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            except BaseException as error:  # reported to the starting thread
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="models-api-faults", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

"""The list-then-watch loop over a scripted API: it watches from the list's
resourceVersion and goes on from the last one seen (bookmarks included), lists again at
once on 410 Gone, and after an error with backoff. (Against a real API server:
tests/gateway/test_gateway_config_source.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import lightkube
import pytest
from lightkube import KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.core_v1 import Secret

from inference_operator.gateway import kubewatch


class Lines(httpx2.AsyncByteStream):
    """A watch response's body: these lines, then either the end of the stream or, with
    ``hang``, nothing more (a watch left open)."""

    def __init__(self, *events: dict[str, Any], hang: bool = False) -> None:
        self._lines = [json.dumps(e).encode() + b"\n" for e in events]
        self._hang = hang

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line
        if self._hang:
            await asyncio.Event().wait()


def answer(status: int = 200, body: Any = None, lines: Lines | None = None) -> httpx2.Response:
    if lines is not None:
        return httpx2.Response(status, stream=lines,
                               headers={"Content-Type": "application/json"})
    return httpx2.Response(status, json=body)


class API:
    """An API server answering lightkube's requests from a script (httpx2's transport)."""

    def __init__(self, *script: httpx2.Response) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.client = lightkube.AsyncClient(
            KubeConfig.from_one(cluster=Cluster(server="http://kube.test"), user=User()),
            transport=httpx2.MockTransport(self._answer))

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        self.calls.append({"path": request.url.path, "timeout": request.extensions["timeout"],
                           **params})
        kind = "watch" if params.get("watch") == "true" else "list"
        response = self.script.pop(0)
        assert isinstance(response.stream, Lines) == (kind == "watch"), (kind, params)
        return response


def thing(version: str, generation: int) -> dict[str, Any]:
    return {"metadata": {"name": "x", "resourceVersion": version}, "generation": generation}


def listed(version: str, *items: dict[str, Any]) -> httpx2.Response:
    return answer(body={"metadata": {"resourceVersion": version}, "items": list(items)})


async def run(api: API, until: int, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the callbacks saw, once ``until`` of them came."""
    monkeypatch.setattr(kubewatch, "INITIAL_BACKOFF", 0.01)
    seen: list[Any] = []
    enough = asyncio.Event()

    def saw(what: Any) -> None:
        seen.append(what)
        if len(seen) >= until:
            enough.set()

    async def on_list(objects: list[dict[str, Any]]) -> None:
        saw(("list", [o["generation"] for o in objects]))

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        saw((kind, obj["generation"]))

    task = asyncio.create_task(kubewatch.list_and_watch(
        api.client, Secret, "ns", "things", on_list=on_list, on_event=on_event,
        field_selector="metadata.name=x"))
    try:
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.client.close()
    return seen


async def test_watches_from_the_last_version_and_lists_again_on_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}
    api = API(
        listed("10", thing("10", 1)),
        answer(lines=Lines({"type": "MODIFIED", "object": thing("11", 2)}, gone)),
        listed("20", thing("20", 3)),
        answer(lines=Lines({"type": "BOOKMARK", "object": {
            "metadata": {"resourceVersion": "25"}}})),  # then the server ends the watch
        answer(lines=Lines({"type": "DELETED", "object": thing("26", 3)}, hang=True)),
    )

    seen = await run(api, 4, monkeypatch)

    assert seen == [("list", [1]), ("MODIFIED", 2), ("list", [3]), ("DELETED", 3)]
    watches = [c for c in api.calls if c.get("watch") == "true"]
    assert [c["resourceVersion"] for c in watches] == ["10", "20", "25"]
    assert all(c["fieldSelector"] == "metadata.name=x"
               and c["path"] == "/api/v1/namespaces/ns/secrets" for c in api.calls)
    assert all(c["allowWatchBookmarks"] == "true" and int(c["timeoutSeconds"]) > 0
               for c in watches)
    # The client waits out the server's timeout, and 30 s more, before it gives up.
    assert all(c["timeout"]["read"] == int(c["timeoutSeconds"]) + 30 for c in watches)


async def test_an_error_is_retried_with_a_new_list(monkeypatch: pytest.MonkeyPatch) -> None:
    api = API(
        answer(status=403, body={"kind": "Status", "code": 403, "message": "forbidden"}),
        listed("1"),
        answer(status=200, lines=Lines({"type": "ERROR", "object": {
            "kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}})),
        listed("2", thing("2", 7)),
        answer(lines=Lines(hang=True)),
    )

    assert await run(api, 2, monkeypatch) == [("list", []), ("list", [7])]

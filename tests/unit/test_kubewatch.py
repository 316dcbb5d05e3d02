"""The list-then-watch loop over a scripted API: it watches from the list's
resourceVersion and goes on from the last one seen (bookmarks included), lists again at
once on 410 Gone, and after an error with backoff. (Against a real API server:
tests/gateway/test_gateway_config_source.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from inference_operator.gateway import kubewatch


class Lines:
    """A watch response's body: these lines, then either the end of the stream or, with
    ``hang``, nothing more (a watch left open)."""

    def __init__(self, *events: dict[str, Any], hang: bool = False) -> None:
        self._lines = [json.dumps(e).encode() + b"\n" for e in events]
        self._hang = hang

    async def readline(self) -> bytes:
        if self._lines:
            return self._lines.pop(0)
        if self._hang:
            await asyncio.Event().wait()
        return b""


class Response:
    def __init__(self, status: int = 200, body: Any = None, lines: Lines | None = None) -> None:
        self.status, self._body, self.content = status, body, lines

    async def read(self) -> bytes:
        return json.dumps(self._body).encode()

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class API:
    """A list function as kubernetes_asyncio generates them, answering from a script."""

    def __init__(self, *script: Response) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def list_things(self, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"namespace": namespace, **kwargs})
        kind = "watch" if kwargs.get("watch") else "list"
        response = self.script.pop(0)
        assert (response.content is not None) == (kind == "watch"), (kind, kwargs)
        return response


def thing(version: str, generation: int) -> dict[str, Any]:
    return {"metadata": {"name": "x", "resourceVersion": version}, "generation": generation}


def listed(version: str, *items: dict[str, Any]) -> Response:
    return Response(body={"metadata": {"resourceVersion": version}, "items": list(items)})


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
        api.list_things, "ns", "things", on_list=on_list, on_event=on_event,
        field_selector="metadata.name=x"))
    try:
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return seen


async def test_watches_from_the_last_version_and_lists_again_on_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}
    api = API(
        listed("10", thing("10", 1)),
        Response(lines=Lines({"type": "MODIFIED", "object": thing("11", 2)}, gone)),
        listed("20", thing("20", 3)),
        Response(lines=Lines({"type": "BOOKMARK", "object": {
            "metadata": {"resourceVersion": "25"}}})),  # then the server ends the watch
        Response(lines=Lines({"type": "DELETED", "object": thing("26", 3)}, hang=True)),
    )

    seen = await run(api, 4, monkeypatch)

    assert seen == [("list", [1]), ("MODIFIED", 2), ("list", [3]), ("DELETED", 3)]
    watches = [c for c in api.calls if c.get("watch")]
    assert [c["resource_version"] for c in watches] == ["10", "20", "25"]
    assert all(c["field_selector"] == "metadata.name=x" and c["_preload_content"] is False
               and c["namespace"] == "ns" for c in api.calls)
    assert all(c["allow_watch_bookmarks"] and c["timeout_seconds"] > 0 for c in watches)


async def test_an_error_is_retried_with_a_new_list(monkeypatch: pytest.MonkeyPatch) -> None:
    api = API(
        Response(status=403, body={"kind": "Status", "code": 403, "message": "forbidden"}),
        listed("1"),
        Response(status=200, lines=Lines({"type": "ERROR", "object": {
            "kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}})),
        listed("2", thing("2", 7)),
        Response(lines=Lines(hang=True)),
    )

    assert await run(api, 2, monkeypatch) == [("list", []), ("list", [7])]

"""List, then watch from the list's resourceVersion, for ever: the loop the gateway's two
Kubernetes watches share (its configuration shards, its peers). Nothing here blocks the
event loop (lightkube's async client); every failure is retried with backoff, a 410 Gone
(the version compacted away) at once with a new list, so what changed meanwhile
(deletions too) is seen.

One watch request per turn of the loop, not lightkube's ``watch()``: that one restarts
the server's ended watches itself with no read timeout (a silently dead connection would
hang it for ever), asks no bookmarks, and on a 410 goes on without a list. Requests are
lightkube's (URL, credentials, TLS); the answers are read here, and objects handed on as
the JSON the API server sent: no model decoding and re-encoding, and no place where a
Secret's data could reach a log."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError
from lightkube.core.resource import NamespacedResource
from lightkube.models.meta_v1 import Status

from inference_operator import jsoncodec

log = logging.getLogger(__name__)

Object = dict[str, Any]
# The API server ends each watch after this long (jittered, so the replicas' watches do
# not all restart at once); the client gives it 30 s more before it calls it dead.
WATCH_SECONDS = 300
WATCH_READ_SLACK = 30
LIST_SECONDS = 30.0
CONNECT_SECONDS = 10.0
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
EVENTS = ("ADDED", "MODIFIED", "DELETED")  # the others: BOOKMARK (a version), ERROR


async def list_and_watch(api: AsyncClient, resource: type[NamespacedResource],
                         namespace: str, what: str, *,
                         on_list: Callable[[list[Object]], Awaitable[None]],
                         on_event: Callable[[str, Object], Awaitable[None]],
                         field_selector: str | None = None,
                         label_selector: str | None = None) -> None:
    """``on_list`` with every object listed, then ``on_event`` with each ADDED, MODIFIED
    or DELETED; again from a new list after a failure. Runs until cancelled."""
    selector = {"fieldSelector": field_selector, "labelSelector": label_selector}
    backoff = INITIAL_BACKOFF
    while True:
        failure: Exception | None = None  # a bug: logged with its traceback, retried too
        try:
            objects, version = await _list(api, resource, namespace, selector)
            await on_list(objects)
            backoff = INITIAL_BACKOFF
            while True:
                version = await _watch(api, resource, namespace, version, selector, on_event)
        except httpx2.HTTPStatusError as error:  # lightkube's ApiError too
            code, said = _status(error)
            if code == 410:
                log.info("%s: watch expired (410 Gone); listing again", what)
                continue
            problem = f"API server answered {said}"
        except (httpx2.RequestError, TimeoutError, OSError, ConfigError) as error:
            problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        except Exception as error:
            problem, failure = "unexpected failure", error
        delay = backoff * random.uniform(0.5, 1.0)  # jittered: replicas retry apart
        log.warning("%s: %s; again in %.1fs", what, problem, delay, exc_info=failure)
        await asyncio.sleep(delay)
        backoff = min(backoff * 2, MAX_BACKOFF)


async def _list(api: AsyncClient, resource: type[NamespacedResource], namespace: str,
                selector: dict[str, str | None]) -> tuple[list[Object], str]:
    request = _request(api, resource, namespace, selector, watch=False,
                       timeout=httpx2.Timeout(LIST_SECONDS, connect=CONNECT_SECONDS))
    async with asyncio.timeout(LIST_SECONDS):  # the whole list, not each read
        response = await _send(api, request)
        try:
            await _raise_for_status(response)
            body = await response.aread()
        finally:
            await response.aclose()
    content = jsoncodec.loads(body)
    return content.get("items") or [], content["metadata"]["resourceVersion"]


async def _watch(api: AsyncClient, resource: type[NamespacedResource], namespace: str,
                 version: str, selector: dict[str, str | None],
                 on_event: Callable[[str, Object], Awaitable[None]]) -> str:
    """One watch until the server ends it; the version to go on from."""
    seconds = random.randint(WATCH_SECONDS // 2, WATCH_SECONDS)
    request = _request(
        api, resource, namespace,
        {**selector, "resourceVersion": version, "allowWatchBookmarks": "true",
         "timeoutSeconds": str(seconds)}, watch=True,
        timeout=httpx2.Timeout(CONNECT_SECONDS, read=seconds + WATCH_READ_SLACK))
    response = await _send(api, request)
    try:
        await _raise_for_status(response)
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            event = jsoncodec.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # as lightkube reads it: the Status, raised
                raise ApiError(status=Status.from_dict(obj))
            version = obj["metadata"]["resourceVersion"]  # a bookmark's too
            if kind in EVENTS:
                await on_event(kind, obj)
    finally:
        await response.aclose()
    return version


# lightkube's request building and sending (its GenericAsyncClient, ``AsyncClient._client``):
# what its own list() and watch() use, here with this loop's timeouts and parameters.

def _request(api: AsyncClient, resource: type[NamespacedResource], namespace: str,
             params: dict[str, str | None], *, watch: bool,
             timeout: httpx2.Timeout) -> httpx2.Request:
    generic = api._client
    basic = generic.prepare_request("list", res=resource, namespace=namespace, watch=watch,
                                    params=params)
    basic.timeout = timeout
    return generic.build_adapter_request(basic)


async def _send(api: AsyncClient, request: httpx2.Request) -> httpx2.Response:
    return await api._client.send(request, stream=True)


async def _raise_for_status(response: httpx2.Response) -> None:
    """An error answer raised as lightkube raises it: ``ApiError`` when it is a Status,
    else httpx2's ``HTTPStatusError`` (a proxy's answer, say)."""
    if response.is_success:
        return
    await response.aread()
    try:
        error = ApiError(request=response.request, response=response)
    except ValueError:  # not a Status
        response.raise_for_status()
        raise
    raise error


def _status(error: httpx2.HTTPStatusError) -> tuple[int, str]:
    """The code, and the code, reason and message to log: a Status's, never a body."""
    if isinstance(error, ApiError):
        status, response = error.status, error.response  # no response: a watch's ERROR
        code = status.code or (0 if response is None else response.status_code)
        reason = status.reason or ("" if response is None else response.reason_phrase)
        message = (status.message or "")[:300]
        said = f"{code} {reason}".rstrip()
        return code, f"{said}: {message}" if message else said
    response = error.response
    return response.status_code, f"{response.status_code} {response.reason_phrase}"

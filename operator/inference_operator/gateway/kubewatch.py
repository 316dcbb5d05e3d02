"""List, then watch from the list's resourceVersion, for ever: the loop the gateway's two
Kubernetes watches share (its configuration shards, its peers). Nothing here blocks the
event loop (kubernetes_asyncio); every failure is retried with backoff, a 410 Gone (the
version compacted away) at once with a new list.

Objects are handed on as the JSON the API server sent, not as client models: no second
decoding, and never through the rest client's DEBUG log of preloaded bodies, which would
print a Secret's data."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from inference_operator.gateway import jsoncodec

log = logging.getLogger(__name__)
# The rest client logs every preloaded response body at DEBUG (as in controller/kube.py).
logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)

Object = dict[str, Any]
# The API server ends each watch after this long (jittered, so the replicas' watches do
# not all restart at once); the client gives it 30 s more before it calls it dead.
WATCH_SECONDS = 300
LIST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0


class _RawWatch(watch.Watch):
    """Events whose ``object`` stays the decoded JSON (no return type: no model)."""

    def get_return_type(self, func: object) -> str:
        return ""


async def list_and_watch(list_call: Callable[..., Awaitable[Any]], namespace: str, what: str,
                         *, on_list: Callable[[list[Object]], Awaitable[None]],
                         on_event: Callable[[str, Object], Awaitable[None]],
                         **selector: str) -> None:
    """``on_list`` with every object listed, then ``on_event`` with each ADDED, MODIFIED
    or DELETED; again from a new list after a failure. Runs until cancelled."""
    backoff = INITIAL_BACKOFF
    while True:
        failure: Exception | None = None  # a bug: logged with its traceback, retried too
        try:
            objects, version = await _list(list_call, namespace, **selector)
            await on_list(objects)
            backoff = INITIAL_BACKOFF
            while True:
                version = await _watch(list_call, namespace, version, on_event, **selector)
        except ApiException as error:
            if error.status == 410:
                log.info("%s: watch expired (410 Gone); listing again", what)
                continue
            problem = f"API server answered {error.status} {error.reason}"
        except (aiohttp.ClientError, TimeoutError) as error:
            problem = str(error) or type(error).__name__
        except Exception as error:
            problem, failure = "unexpected failure", error
        delay = backoff * random.uniform(0.5, 1.0)  # jittered: replicas retry apart
        log.warning("%s: %s; again in %.1fs", what, problem, delay, exc_info=failure)
        await asyncio.sleep(delay)
        backoff = min(backoff * 2, MAX_BACKOFF)


async def _list(list_call: Callable[..., Awaitable[Any]], namespace: str,
                **selector: str) -> tuple[list[Object], str]:
    response = await list_call(namespace, _preload_content=False,
                               _request_timeout=LIST_TIMEOUT, **selector)
    try:
        body = await response.read()
    finally:
        response.release()
    if response.status != 200:
        raise ApiException(status=response.status, reason=_status_message(body))
    content = jsoncodec.loads(body)
    return content.get("items") or [], content["metadata"]["resourceVersion"]


async def _watch(list_call: Callable[..., Awaitable[Any]], namespace: str, version: str,
                 on_event: Callable[[str, Object], Awaitable[None]], **selector: str) -> str:
    """One watch until the server ends it; the version to go on from."""
    seconds = random.randint(WATCH_SECONDS // 2, WATCH_SECONDS)
    async with _RawWatch() as events:
        async for event in events.stream(
                list_call, namespace, resource_version=version, allow_watch_bookmarks=True,
                timeout_seconds=seconds, **selector,
                _request_timeout=aiohttp.ClientTimeout(sock_connect=10,
                                                       sock_read=seconds + 30)):
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                await on_event(event["type"], event["raw_object"])
        return events.resource_version or version


def _status_message(body: bytes) -> str:
    """The message of an API server's Status answer (never a Secret's content)."""
    try:
        return str(jsoncodec.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        return ""

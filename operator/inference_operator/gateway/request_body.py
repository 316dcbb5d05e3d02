"""Reading a request's body within the size limit and the body timeout."""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web

from inference_operator.gateway import errors


async def read_body(request: web.Request, max_size: int, body_timeout: float) -> bytes:
    """Not read with ``request.read()``, which keeps a copy for the request's whole life:
    a queued request keeps only what it sends upstream."""
    check_length(request, max_size)
    try:
        if request.content.is_eof():
            # The common case: the whole body came with the head, nothing to wait for,
            # so no timer is set up on the hot path.
            return await _read(request.content, max_size)
        async with asyncio.timeout(body_timeout):
            return await _read(request.content, max_size)
    except TimeoutError:
        raise errors.body_timed_out(body_timeout) from None


def check_length(request: web.Request, max_size: int) -> int:
    """The most bytes the body can have: its Content-Length, else the limit; a body
    that says it is larger is refused before a byte of it is read."""
    length = request.content_length
    if length is not None and length > max_size:
        raise errors.too_large(max_size)
    return max_size if length is None else length


async def _read(content: StreamReader, limit: int) -> bytes:
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > limit:  # a chunked body has no Content-Length to refuse it by
            raise errors.too_large(limit)
    return bytes(body)

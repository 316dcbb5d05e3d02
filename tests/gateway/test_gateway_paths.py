"""Paths are split into segments before they are decoded, as Elasticsearch's REST layer
does: an encoded slash (``%2F``) belongs to the segment it stands in and never makes a
new one, so ``/_inference/completion%2Fx`` names the id ``completion/x`` (which cannot
exist), not task type ``completion`` and id ``x``. A proxy in front of the gateway that
allows or refuses paths by their text sees what the gateway routes."""

from __future__ import annotations

import pytest
from gateway_support import RunningGateway, is_es_error


@pytest.mark.parametrize("path", [
    "/_inference/completion%2Fanthropic_completion",
    "/_inference/completion%2fanthropic_completion",
    "/_inference%2Fcompletion/anthropic_completion",
])
async def test_an_encoded_slash_does_not_split_a_segment(gateway: RunningGateway,
                                                         path: str) -> None:
    await gateway.put()
    status, _, payload = await gateway.call("POST", path, {"input": "hello"})
    assert status in (400, 404) and is_es_error(payload, status), payload


async def test_an_encoded_id_is_decoded_after_routing(gateway: RunningGateway) -> None:
    await gateway.put()
    status, _, payload = await gateway.call(
        "POST", "/_inference/completion/anthropic%5Fcompletion", {"input": "hello"})
    assert status == 200, payload

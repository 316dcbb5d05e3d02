"""Access hardening: who may do what, and what a request may cost the gateway.

Every test here failed before the change it guards (docs/reliability.md, "Gateway")."""

from __future__ import annotations

import hmac
import json

import pytest
from aiohttp import web
from gateway_support import (
    ADMIN_TOKEN,
    GatewayFactory,
    RunningGateway,
    answer_problems,
    raw_exchange,
    seed_body,
    split_http,
    start_emulator,
)

from inference_operator.gateway import openapi
from inference_operator.gateway.server import GatewayConfig

COMPLETION = "/_inference/completion/anthropic_completion"


async def test_admin_token_is_compared_in_constant_time(gateway: RunningGateway,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A spy that calls through: the comparison must go through hmac.compare_digest (a
    # plain == stops at the first differing byte, and its timing tells how many matched).
    # Timing itself is not measured: on a shared 2-core machine that would be noise.
    seen: list[bytes] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        seen.append(given)
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tokens = [ADMIN_TOKEN[:-1] + "X", ADMIN_TOKEN, ADMIN_TOKEN[:4], ADMIN_TOKEN + "X"]
    statuses = [(await gateway.call("GET", "/_inference", admin=True, token=t))[0]
                for t in tokens]
    assert statuses == [401, 200, 401, 401]
    assert seen == [t.encode() for t in tokens]


async def test_a_token_that_is_not_utf8_is_refused_not_a_crash(gateway: RunningGateway) -> None:
    # Was a 500: the header's raw bytes could not be encoded back for the comparison.
    raw, _ = await raw_exchange(gateway.server.admin_port, [
        b"GET /_inference HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n"])
    status, headers, body = split_http(raw)
    assert status == 401 and not answer_problems(status, headers, body)


async def test_the_public_listener_refuses_every_admin_operation(
        gateway: RunningGateway) -> None:
    """Every operation the admin document has and the public one lacks, even with the
    admin token: 405 with ``Allow``, and nothing changes."""
    await gateway.put()
    public = openapi.document(admin=False)["paths"]
    refused = []
    for path, item in openapi.document(admin=True)["paths"].items():
        for method in set(item) - set(public.get(path, {})):
            concrete = path.format(task_type="completion", inference_id="anthropic_completion")
            status, headers, payload = await gateway.call(
                method.upper(), concrete, seed_body(), admin=False)
            body = json.dumps(payload).encode()
            assert status == 405 and "Allow" in headers, (method, concrete, payload)
            assert not answer_problems(status, headers, body)
            refused.append(f"{method.upper()} {path}")
    assert len(refused) >= 6, refused  # PUT, DELETE (2 paths each), _update (2 paths)
    _, _, listing = await gateway.call("GET", "/_inference")
    assert listing["endpoints"][0]["task_settings"] == seed_body()["task_settings"]


def completion_head(framing: str) -> bytes:
    """The head of a raw completion request; ``framing`` is its Content-Length or
    Transfer-Encoding line."""
    return (f"POST {COMPLETION} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n").encode()


async def test_bodies_over_the_limit_are_413_before_being_read(
        make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_body_size=1000)
    await gateway.put()
    # Declared too large: answered at once, without waiting for a byte of the body,
    # and the connection is closed rather than drained.
    raw, _ = await raw_exchange(gateway.server.port, [completion_head("Content-Length: 2000000")])
    status, headers, body = split_http(raw)
    assert status == 413 and not answer_problems(status, headers, body)
    assert json.loads(body)["error"]["type"] == "content_too_long_exception"
    assert "[1000] bytes" in json.loads(body)["error"]["reason"]


async def test_chunked_bodies_over_the_limit_are_413(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_body_size=1000)
    await gateway.put()
    chunk = b"x" * 1500
    raw, _ = await raw_exchange(gateway.server.port, [
        completion_head("Transfer-Encoding: chunked")
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)])
    status, headers, body = split_http(raw)
    assert status == 413 and not answer_problems(status, headers, body)


async def test_a_body_at_the_limit_is_served(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_body_size=1000)
    await gateway.put()
    body = b'{"input": "hi"}'
    status, _, payload = await gateway.call("POST", COMPLETION, raw=body.ljust(1000))
    assert status == 200, payload


def test_the_default_limits_are_sane() -> None:
    config = GatewayConfig(admin_token="t")
    assert config.max_body_size == 1024 * 1024
    assert 0 < config.header_timeout <= 60 and 0 < config.body_timeout <= 60


async def test_a_client_trickling_its_headers_is_cut_off(make_gateway: GatewayFactory) -> None:
    """Slowloris: one header byte every 0.2 s would take 24 s to finish the head; the
    gateway closes the connection once the header timeout (1 s here) has passed."""
    gateway = await make_gateway(header_timeout=1.0)
    head = b"GET /_inference HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    raw, closed_after = await raw_exchange(
        gateway.server.port, [head[i:i + 1] for i in range(len(head))], gap=0.2, limit=20)
    assert raw == b""  # no answer: the head never completed
    # 1 s plus timer slack (aiohttp rounds timers up); far below the 24 s of trickling.
    assert closed_after < 10, closed_after


async def test_an_idle_connection_is_closed_after_the_header_timeout(
        make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(header_timeout=1.0)
    raw, closed_after = await raw_exchange(gateway.server.port, [], limit=20)
    assert raw == b"" and closed_after < 10


async def test_a_stalled_body_gets_408_and_the_connection_closes(
        make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(body_timeout=1.0)
    await gateway.put()
    raw, closed_after = await raw_exchange(
        gateway.server.port, [completion_head("Content-Length: 100") + b'{"input": '], limit=20)
    status, headers, body = split_http(raw)
    assert status == 408 and not answer_problems(status, headers, body)
    assert json.loads(body)["error"]["reason"] == "request body not received within [1s]"
    assert closed_after < 10


@pytest.mark.parametrize("redirect", [301, 302, 303, 307, 308])
async def test_upstream_redirects_are_not_followed(make_gateway: GatewayFactory,
                                                   redirect: int) -> None:
    """An upstream answering with a redirect to another server (which would happily
    answer: it is an emulator) gets a 502; the other server receives nothing, so neither
    the key nor the prompt travel to wherever a Location header points."""
    target = await start_emulator()
    redirector = web.Application()

    async def redirect_all(request: web.Request) -> web.Response:
        return web.Response(status=redirect, headers={"Location": target.url + request.path})

    redirector.router.add_route("*", "/{tail:.*}", redirect_all)
    runner = web.AppRunner(redirector, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        gateway = await make_gateway(
            anthropic_base_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        await gateway.put(body=seed_body(requests_per_minute=60_000))
        for path in (COMPLETION, COMPLETION + "/_stream"):
            async with gateway.session.post(gateway.public + path, json={"input": "x"}) as r:
                status, headers, body = r.status, r.headers, await r.read()
            assert status == 502, body
            assert not answer_problems(status, headers, body, upstream_fault=True)
            assert f"Received a redirect status code for request from inference entity id " \
                   f"[anthropic_completion] status [{redirect}]" in body.decode()
        assert target.requests() == []
    finally:
        await runner.cleanup()
        assert target.runner is not None
        await target.runner.cleanup()

"""CPU per request is linear in its size, and bad JSON of any shape is a
400 (point 7): hostile bodies at the body limit (1 MiB), each sent to a real gateway
process, cost it at most 0.5 s of CPU while ``/healthz`` keeps answering, and are
answered without a 5xx or a logged traceback. The CPU figures are printed for
docs/reliability.md (run with -s)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from isolation_support import ADMIN, HealthWatch, Isolated, isolated, post

from gateway.gateway_support import answer_problems, is_es_error, is_unified_error
from inference_operator.gateway.http import Limits
from inference_operator.gateway.validation import MAX_NESTING_DEPTH

LIMIT = Limits.max_body_size
CPU_BUDGET = 0.5  # seconds, the bound
CHAT = "/_inference/chat_completion/chat"
COMPLETION = "/_inference/completion/completion"
HI = '{"role":"user","content":"hi"}'


def filled(head: str, item: Callable[[int], str], tail: str, sep: str = ",") -> bytes:
    """``head``, as many items as fit in the body limit, ``tail``."""
    parts, size = [head], len(head) + len(tail)
    for index in range(LIMIT):
        text = (sep if index else "") + item(index)
        if size + len(text.encode()) > LIMIT:
            break
        parts.append(text)
        size += len(text.encode())
    return ("".join(parts) + tail).encode()


def repeated(text: str) -> Callable[[int], str]:
    return lambda _: text


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (path, body): every one at the body limit.
SHAPES: dict[str, tuple[str, bytes]] = {
    "chat: consecutive tool messages": (CHAT, filled(
        '{"messages":[', repeated('{"role":"tool","tool_call_id":"t","content":"x"}'), "]}")),
    "chat: tiny messages": (CHAT, filled('{"messages":[', repeated('{"role":"user"}'), "]}")),
    "chat: content parts": (CHAT, filled(
        '{"messages":[{"role":"user","content":[', repeated('{"type":"text","text":""}'),
        "]}]}")),
    "chat: image parts": (CHAT, filled(
        '{"messages":[{"role":"user","content":[',
        repeated('{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}'),
        "]}]}")),
    "chat: tools": (CHAT, filled(
        f'{{"messages":[{HI}],"tools":[', repeated('{"type":"function","function":{"name":"f"}}'),
        "]}")),
    "chat: tool calls": (CHAT, filled(
        '{"messages":[{"role":"assistant","tool_calls":[',
        repeated('{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}'),
        "]}]}")),
    "chat: stop strings": (CHAT, filled(f'{{"messages":[{HI}],"stop":[', repeated('"x"'), "]}")),
    "chat: escapes": (CHAT, filled('{"messages":[{"role":"user","content":"',
                                   repeated("\\ud83d\\ude00"), '"}]}', sep="")),
    "chat: many keys": (CHAT, filled(
        f'{{"messages":[{HI}],"tools":[{{"type":"function","function":{{"name":"f",'
        '"parameters":{', lambda i: f'"k{i}":0', "}}}]}")),
    "chat: nesting at the depth limit, repeated": (CHAT, filled(
        f'{{"messages":[{HI}],"tools":[{{"type":"function","function":{{"name":"f",'
        '"parameters":{"x":[', repeated(nested(MAX_NESTING_DEPTH - 6)), "]}}}]}")),
    "chat: deep tool call arguments": (CHAT, (
        '{"messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function",'
        '"function":{"name":"f","arguments":"' + nested(LIMIT // 2 - 100) + '"}}]}]}'
    ).encode()),
    "chat: deep nesting": (CHAT, nested(LIMIT // 2).encode()),
    "completion: input strings": (COMPLETION, filled('{"input":[', repeated('"x"'), "]}")),
    "completion: numbers": (COMPLETION, filled('{"input":[', repeated("0"), "]}")),
    "completion: escapes": (COMPLETION, filled('{"input":"', repeated("\\u00e9"), '"}',
                                               sep="")),
    "completion: unknown task settings": (COMPLETION, filled(
        '{"input":"x","task_settings":{', lambda i: f'"k{i}":0', "}}")),
    "completion: deep input": (COMPLETION, (
        '{"input":' + nested(LIMIT // 2 - 10) + "}").encode()),
    "completion: deep nesting": (COMPLETION, nested(LIMIT // 2).encode()),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    with isolated(tmp_path_factory.mktemp("cost")) as running:
        running.put("chat", "chat_completion")
        running.put("completion", "completion")
        yield running


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_hostile_body_at_the_limit_costs_little_cpu_and_never_stalls_healthz(
        gateway: Isolated, shape: str) -> None:
    path, body = SHAPES[shape]
    assert LIMIT - 200 < len(body) <= LIMIT, len(body)
    watch = HealthWatch(gateway.stack.gateway_url)
    async with aiohttp.ClientSession() as session:
        before = gateway.gateway.cpu_seconds()
        async with watch.during():
            status, headers, answer = await post(session, gateway.stack.gateway_url + path,
                                                 body, timeout=aiohttp.ClientTimeout(total=120))
        spent = gateway.gateway.cpu_seconds() - before
    print(f"\n{shape}: {len(body)} bytes, {spent:.2f} s of gateway CPU, answered {status}, "
          f"/healthz at worst {max(watch.latencies, default=0):.2f} s")
    assert status < 500, answer[:300]
    assert not answer_problems(status, headers, answer, chat=path == CHAT), answer[:300]
    assert spent <= CPU_BUDGET, (shape, spent)
    assert watch.latencies and not watch.failures, watch.failures
    assert "Traceback" not in gateway.gateway.log_text()


def _nested_json_is_a_parse_exception(status: int, answer: bytes, unified: bool) -> bool:
    payload = json.loads(answer)
    if unified:
        return (status == 400 and is_unified_error(payload)
                and payload["error"]["type"] == "x_content_parse_exception")
    return is_es_error(payload, 400) and payload["error"]["type"] == "x_content_parse_exception"


@pytest.mark.parametrize(("method", "path", "listener", "unified"), [
    ("POST", CHAT, "public", True),
    ("POST", CHAT + "/_stream", "public", True),
    ("POST", COMPLETION, "public", False),
    ("POST", COMPLETION + "/_stream", "admin", False),
    ("PUT", "/_inference/completion/another", "admin", False),
    ("PUT", "/_inference/completion/completion/_update", "admin", False),
    ("POST", "/_inference/completion/completion/_update", "admin", False),
])
async def test_json_nested_past_the_limit_is_a_400_on_every_body_reading_route(
        gateway: Isolated, method: str, path: str, listener: str, unified: bool) -> None:
    base = gateway.stack.gateway_url if listener == "public" else gateway.stack.admin_url
    headers = {"Content-Type": "application/json", **(ADMIN if listener == "admin" else {})}
    async with aiohttp.ClientSession() as session:
        for depth in (MAX_NESTING_DEPTH + 1, 5000):
            body = ('{"input":' + nested(depth) + "}").encode()
            async with session.request(method, base + path, data=body,
                                       headers=headers) as response:
                answer = await response.read()
            assert _nested_json_is_a_parse_exception(response.status, answer, unified), (
                depth, response.status, answer[:300])
    assert "Traceback" not in gateway.gateway.log_text()


def test_the_shapes_are_what_they_say() -> None:
    """The table's bodies are valid JSON (but those nested past the limit)."""
    for name, (_, body) in SHAPES.items():
        if "deep" in name:
            continue
        json.loads(body)

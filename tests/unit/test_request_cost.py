"""A request's cost is linear in its size, in the parse and
translation alone: consecutive tool messages, the message cap, JSON nested past the
limit (a 400, never a RecursionError)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_chat_translation import endpoint

from inference_operator import jsoncodec
from inference_operator.gateway import validation
from inference_operator.gateway.chat import messages, request
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.http import Limits

CPU_BUDGET = 0.5  # seconds for a body at the limit: the bound


def cpu(work: Any) -> tuple[Any, float]:
    started = time.process_time()
    result = work()
    return result, time.process_time() - started


def test_consecutive_tool_messages_at_the_body_limit_translate_in_linear_time() -> None:
    # As many as fit in the body limit (16 s of CPU when each looked the turn over again).
    tool = {"role": "tool", "tool_call_id": "t", "content": "x"}
    count = Limits.max_body_size // (len(json.dumps(tool, separators=(",", ":"))) + 1)
    raw = json.dumps({"messages": [tool] * count}, separators=(",", ":")).encode()
    assert len(raw) <= Limits.max_body_size

    params, spent = cpu(lambda: messages.message_params(endpoint(), request.parse(raw)))

    (turn,) = params["messages"]  # one user turn with every result, in order
    assert turn["role"] == "user" and len(turn["content"]) == count
    assert {block["type"] for block in turn["content"]} == {"tool_result"}
    assert spent < CPU_BUDGET, spent


def test_tool_results_after_a_user_message_start_their_own_turn() -> None:
    body = {"messages": [{"role": "tool", "tool_call_id": "a"}, {"role": "user", "content": "u"},
                         {"role": "tool", "tool_call_id": "b"},
                         {"role": "tool", "tool_call_id": "c"}]}
    turns = messages.message_params(endpoint(), request.parse(json.dumps(body).encode()))
    assert [[block.get("tool_use_id") for block in turn["content"]]
            if isinstance(turn["content"], list) else turn["content"]
            for turn in turns["messages"]] == [["a"], "u", ["b", "c"]]


def test_more_messages_than_anthropic_takes_are_refused() -> None:
    body = {"messages": [{"role": "user"}] * (request.MAX_MESSAGES + 1)}
    with pytest.raises(ESError) as refused:
        request.parse(json.dumps(body).encode())
    assert refused.value.status == 400
    assert refused.value.type == "action_request_validation_exception"
    assert f"at most [{request.MAX_MESSAGES}] messages" in refused.value.reason
    assert refused.value.unified_body()["error"]["param"] == "messages"
    # At the cap: accepted.
    body["messages"].pop()
    assert len(request.parse(json.dumps(body).encode()).messages) == request.MAX_MESSAGES


@pytest.mark.parametrize("depth", [validation.MAX_NESTING_DEPTH + 1, 5000,
                                   Limits.max_body_size // 2])
def test_json_nested_past_the_limit_is_a_parse_exception(depth: int) -> None:
    raw = b'{"input":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(ESError) as refused:
        validation.load_json(raw)
    assert (refused.value.status, refused.value.type) == (400, "x_content_parse_exception")
    assert f"[{validation.MAX_NESTING_DEPTH}]" in refused.value.reason


def test_json_nested_at_the_limit_is_read() -> None:
    depth = validation.MAX_NESTING_DEPTH
    raw = b'{"input":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    assert "input" in validation.load_json(raw)


@pytest.mark.parametrize(("text", "deep"), [
    ('["[[[[[["]', False),  # brackets in a string are not nesting
    ('["\\"[[[["]', False),  # nor after an escaped quote
    ("[[[[]]]]", True),
    ('{"a":{"b":[{}]}}', True),
    ('{"a":{"b":[]}}', False),
    ('[["[", "]", "[[[["]]', False),  # strings side by side, brackets in some
    ('[["\\\\", "[[[["]]', False),  # an escaped backslash ends no string early
])
def test_nesting_is_counted_outside_strings(text: str, deep: bool) -> None:
    assert jsoncodec.too_deep(text, 3) is deep
    assert jsoncodec.too_deep(text.encode(), 3) is deep


def test_tool_call_arguments_nested_past_the_limit_are_refused() -> None:
    depth = validation.MAX_NESTING_DEPTH + 1
    call = {"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "[" * depth + "]" * depth}}
    body = {"messages": [{"role": "assistant", "tool_calls": [call]}]}
    with pytest.raises(ESError) as refused:
        messages.message_params(endpoint(), request.parse(json.dumps(body).encode()))
    assert refused.value.status == 400 and "nests deeper than" in refused.value.reason


@pytest.mark.parametrize("depth", [20, 21])
def test_nesting_past_what_a_few_passes_take_off_is_counted_exactly(depth: int) -> None:
    text = "[" * depth + "]" * depth + ',{"a":[[]]}' * 10
    assert jsoncodec.too_deep(f"[{text}]", 21) is (depth == 21)


@pytest.mark.parametrize(("text", "limit", "deep"), [
    ("[" * 4, 3, True),  # never closed: counted all the same
    ("[][[[", 3, False),
    ("[][[[[", 3, True),
    ("[{[{}]}]", 3, True),  # both kinds count
    ("[" + ",".join(["[" * 9 + "]" * 9] * 50) + "]", 10, False),  # teeth past the passes
    ("[" + ",".join(["[" * 9 + "]" * 9] * 50) + "]", 9, True),
    ("[" + ",".join(["[" * 9 + "]" * 9] * 50 + ["[" * 30 + "]" * 30]) + "]", 30, True),
])
def test_nesting_is_counted_exactly_whatever_the_shape(text: str, limit: int,
                                                       deep: bool) -> None:
    assert jsoncodec.too_deep(text, limit) is deep

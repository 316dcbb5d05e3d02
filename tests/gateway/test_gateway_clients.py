"""The seed's three examples against the real CLI processes (``inference-operator
emulator`` and ``inference-operator gateway``): the official Python client, the official
JavaScript client and raw HTTP; then a restart with ``--state-file``. Then the chat
feature's acceptance test, the same three ways: a conversation with a system prompt and
a tool round trip over ``chat_completion``, every chunk read by the openai SDK's model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from gateway_support import text_of, tool_calls_of
from openai.types.chat import ChatCompletionChunk

from inference_devkit.devstack.processes import Stack

API_KEY = "sk-ant-cli-test-KEY-0b6d2a"
MODEL = "claude-sonnet-4-5"
TOKEN = "cli-admin-token"
JS_DIR = Path(__file__).parent / "js"
CLI = [sys.executable, "-m", "inference_operator.cli.main"]
EXPECTED = "Hello from the Anthropic emulator. You said: What is Elastic?"
TIMEOUT = 30  # seconds, for each request and each client process

# The conversation (the JavaScript client gets it as JSON): a system prompt, a question that
# names the tool (the emulator calls a tool named as a whole word, docs/emulator.md), the
# tool's result and a follow-up.
SYSTEM = "You answer weather questions."
ASK = "Use get_weather for Paris"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_RESULT = "18C and sunny"
FOLLOW_UP = "Thanks"
SCRIPT = {"system": SYSTEM, "ask": ASK, "tool": WEATHER, "result": TOOL_RESULT,
          "follow_up": FOLLOW_UP}
CHAT_SETTINGS = {"service": "anthropic",
                 "service_settings": {"api_key": API_KEY, "model_id": MODEL},
                 "task_settings": {"max_tokens": 1024}}

Chunks = list[ChatCompletionChunk]
Send = Callable[[dict[str, Any]], Chunks]  # one chat request body -> its stream's chunks


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("cli"), api_keys=(API_KEY,), admin_token=TOKEN)
    try:
        running.start(running.emulator())
        running.start(running.gateway(
            "--state-file", str(running.work_dir / "state.json"), "--log-level", "debug"))
        yield running
    finally:
        running.stop()


def delete_endpoint(stack: Stack, inference_id: str = "anthropic_completion") -> None:
    request = urllib.request.Request(stack.admin_url + f"/_inference/{inference_id}",
                                     method="DELETE",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        urllib.request.urlopen(request, timeout=TIMEOUT).close()
    except urllib.error.HTTPError as error:
        assert error.code == 404


def test_python_client_seed_example(stack: Stack) -> None:
    delete_endpoint(stack)
    client = Elasticsearch(stack.admin_url, bearer_auth=TOKEN)
    # The seed's example, as documented.
    resp = client.inference.put(
        task_type="completion",
        inference_id="anthropic_completion",
        inference_config={
            "service": "anthropic",
            "service_settings": {
                "api_key": API_KEY,
                "model_id": MODEL,
            },
            "task_settings": {
                "max_tokens": 1024,
            },
        },
    )
    assert resp["inference_id"] == "anthropic_completion" and "api_key" not in str(resp.body)
    resp = client.inference.completion(inference_id="anthropic_completion",
                                       input="What is Elastic?")
    assert resp["completion"][0]["result"] == EXPECTED
    # Applications use the public listener, without credentials.
    public = Elasticsearch(stack.gateway_url)
    assert public.inference.completion(inference_id="anthropic_completion",
                                       input="What is Elastic?")["completion"][0]["result"] \
        == EXPECTED
    listing = public.inference.get()
    assert [e["inference_id"] for e in listing["endpoints"]] == ["anthropic_completion"]


def node_with_client() -> str:
    """node, with the official client installed in JS_DIR; the test is skipped without."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the JavaScript client")
    if not (JS_DIR / "node_modules" / "@elastic" / "elasticsearch").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True,
                       capture_output=True, timeout=300)
    return node


def test_javascript_client_seed_example(stack: Stack) -> None:
    node = node_with_client()
    delete_endpoint(stack)
    result = subprocess.run(
        [node, "seed_example.js", stack.admin_url, TOKEN, API_KEY, MODEL, "What is Elastic?"],
        cwd=JS_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"completion": [{"result": EXPECTED}]}


def test_raw_http_seed_example(stack: Stack) -> None:
    delete_endpoint(stack)
    body = {"service": "anthropic",
            "service_settings": {"api_key": API_KEY, "model_id": MODEL},
            "task_settings": {"max_tokens": 1024}}
    put = urllib.request.Request(
        stack.admin_url + "/_inference/completion/anthropic_completion", method="PUT",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(put) as response:
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"
        assert "api_key" not in response.read().decode()
    post = urllib.request.Request(
        stack.gateway_url + "/_inference/completion/anthropic_completion", method="POST",
        data=json.dumps({"input": "What is Elastic?"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post) as response:
        assert json.loads(response.read()) == {"completion": [{"result": EXPECTED}]}


def test_restart_with_state_file_keeps_endpoints(stack: Stack) -> None:
    client = Elasticsearch(stack.admin_url, bearer_auth=TOKEN)
    delete_endpoint(stack)
    client.inference.put(task_type="completion", inference_id="anthropic_completion",
                         inference_config={"service": "anthropic",
                                           "service_settings": {"api_key": API_KEY,
                                                                "model_id": MODEL},
                                           "task_settings": {"max_tokens": 1024}})
    before = client.inference.get().body
    gateway = stack.services["gateway"]
    gateway.stop()
    gateway.start()
    assert Elasticsearch(stack.admin_url, bearer_auth=TOKEN).inference.get().body == before
    assert Elasticsearch(stack.gateway_url).inference.completion(
        inference_id="anthropic_completion", input="What is Elastic?"
    )["completion"][0]["result"] == EXPECTED
    assert oct((stack.work_dir / "state.json").stat().st_mode & 0o777) == "0o600"


# The chat feature's acceptance test. Each test has its own endpoint, gone before and after
# (the seed's listing test expects only its own).


@pytest.fixture
def chat_id(stack: Stack, request: pytest.FixtureRequest) -> Iterator[str]:
    inference_id = request.node.name.removeprefix("test_")
    delete_endpoint(stack, inference_id)
    yield inference_id
    delete_endpoint(stack, inference_id)


def put_chat_endpoint(stack: Stack, inference_id: str) -> None:
    client = Elasticsearch(stack.admin_url, bearer_auth=TOKEN, request_timeout=TIMEOUT)
    resp = client.inference.put(task_type="chat_completion", inference_id=inference_id,
                                inference_config=CHAT_SETTINGS)
    assert resp["task_type"] == "chat_completion" and "api_key" not in str(resp.body)


def sse_chunks(text: str) -> Chunks:
    """The chunks of a chat stream: ``event: message`` blocks whose data is a
    ``chat.completion.chunk`` (read by the openai SDK's model), the last one ``[DONE]``."""
    assert text.endswith("\n\n"), text[-200:]
    blocks = [block.split("\n") for block in text.removesuffix("\n\n").split("\n\n")]
    assert all(len(lines) == 2 and lines[0] == "event: message"
               and lines[1].startswith("data: ") for lines in blocks), text
    data = [lines[1].removeprefix("data: ") for lines in blocks]
    assert data[-1] == "[DONE]"
    return [ChatCompletionChunk.model_validate_json(item) for item in data[:-1]]


def converse(send: Send) -> list[Chunks]:
    """The three turns, each request built from the answers before it, as an application
    builds them."""
    history: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": ASK}]
    first = send({"messages": history, "tools": [WEATHER], "tool_choice": "auto"})
    calls = tool_calls_of(first)
    history.append({"role": "assistant", "content": text_of(first), "tool_calls": [
        {"id": call["id"], "type": "function",
         "function": {"name": call["name"], "arguments": call["arguments"]}}
        for call in calls]})
    history += [{"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT}
                for call in calls]
    second = send({"messages": history, "tools": [WEATHER]})
    history += [{"role": "assistant", "content": text_of(second)},
                {"role": "user", "content": FOLLOW_UP}]
    return [first, second, send({"messages": history, "tools": [WEATHER]})]


def check_turn(chunks: Chunks, finish_reason: str) -> None:
    """One answer's stream, as OpenAI-style clients rely on it: one id and model, the role
    first, and one finish reason, in the last chunk, with the usage."""
    assert chunks and all(len(c.choices) == 1 for c in chunks)
    assert {c.id for c in chunks} == {chunks[0].id} and {c.model for c in chunks} == {MODEL}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == \
        [None] * (len(chunks) - 1) + [finish_reason]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def check_conversation(stack: Stack, turns: list[Chunks]) -> None:
    first, second, third = turns
    check_turn(first, "tool_calls")
    assert text_of(first) == "I will call get_weather."
    [call] = tool_calls_of(first)
    assert call["name"] == "get_weather" and call["id"].startswith("toolu_")
    assert json.loads(call["arguments"]) == {"city": ASK}

    check_turn(second, "stop")
    assert tool_calls_of(second) == []
    assert text_of(second) == f"Hello from the Anthropic emulator. The tool said: {TOOL_RESULT}"

    check_turn(third, "stop")
    assert tool_calls_of(third) == []
    assert text_of(third) == f"Hello from the Anthropic emulator. You said: {FOLLOW_UP}"

    # What Anthropic got: the system prompt each time, and the tool round trip in the
    # history as Messages API blocks.
    with urllib.request.urlopen(stack.emulator_url + "/_emulator/requests",
                                timeout=TIMEOUT) as response:
        sent = [entry["body"] for entry in json.loads(response.read())[-3:]]
    assert [body["system"] for body in sent] == [[{"type": "text", "text": SYSTEM}]] * 3
    assert sent[0]["tool_choice"] == {"type": "auto"}
    assert sent[2]["messages"][1:3] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "I will call get_weather."},
            {"type": "tool_use", "id": call["id"], "name": "get_weather",
             "input": {"city": ASK}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                      "content": [{"type": "text", "text": TOOL_RESULT}]}]}]
    assert sent[2]["messages"][-1] == {"role": "user", "content": FOLLOW_UP}


def test_chat_with_a_tool_through_the_javascript_client(stack: Stack, chat_id: str) -> None:
    node = node_with_client()
    result = subprocess.run(
        [node, "chat_example.js", stack.admin_url, stack.gateway_url, TOKEN, API_KEY, MODEL,
         chat_id, json.dumps(SCRIPT)],
        cwd=JS_DIR, capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert result.returncode == 0, result.stderr
    turns: list[Chunks] = [[], [], []]
    for line in result.stdout.splitlines():
        printed = json.loads(line)
        turns[printed["turn"] - 1].append(ChatCompletionChunk.model_validate(printed["chunk"]))
    check_conversation(stack, turns)


def test_chat_with_a_tool_over_raw_http(stack: Stack, chat_id: str) -> None:
    put_chat_endpoint(stack, chat_id)

    def send(body: dict[str, Any]) -> Chunks:
        post = urllib.request.Request(
            stack.gateway_url + f"/_inference/chat_completion/{chat_id}/_stream",
            method="POST", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=TIMEOUT) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["X-Elastic-Product"] == "Elasticsearch"
            return sse_chunks(response.read().decode())

    check_conversation(stack, converse(send))


def test_chat_with_a_tool_through_the_python_client(stack: Stack, chat_id: str) -> None:
    # elasticsearch-py has no chat helper; perform_request reads a text/* answer as text
    # (the whole stream, once it has ended).
    put_chat_endpoint(stack, chat_id)
    client = Elasticsearch(stack.gateway_url, request_timeout=TIMEOUT)

    def send(body: dict[str, Any]) -> Chunks:
        response = client.perform_request(
            "POST", f"/_inference/chat_completion/{chat_id}/_stream", body=body,
            headers={"accept": "text/event-stream", "content-type": "application/json"})
        assert response.meta.status == 200 and isinstance(response.body, str)
        return sse_chunks(response.body)

    check_conversation(stack, converse(send))


def test_key_never_in_the_gateway_log(stack: Stack) -> None:
    # Runs after the others: the log (at debug level) holds all their traffic.
    text = stack.services["gateway"].log_text()
    assert "endpoint [anthropic_completion] created" in text
    assert API_KEY not in text

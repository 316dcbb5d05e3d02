"""The seed's three examples against the real CLI processes (``inference-operator
emulator`` and ``inference-operator gateway``): the official Python client, the official
JavaScript client and raw HTTP; then a restart with ``--state-file``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from inference_operator.devstack.processes import Stack

API_KEY = "sk-ant-cli-test-KEY-0b6d2a"
MODEL = "claude-sonnet-4-5"
TOKEN = "cli-admin-token"
JS_DIR = Path(__file__).parent / "js"
CLI = [sys.executable, "-m", "inference_operator.cli.main"]
EXPECTED = "Hello from the Anthropic emulator. You said: What is Elastic?"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("cli"), api_keys=(API_KEY,), admin_token=TOKEN)
    try:
        running.start(running.emulator())
        running.start(running.gateway(
            "--state-file", str(running.work_dir / "state.json"), "--ready-without-sync",
            "--log-level", "debug"))
        yield running
    finally:
        running.stop()


def delete_endpoint(stack: Stack) -> None:
    request = urllib.request.Request(stack.admin_url + "/_inference/anthropic_completion",
                                     method="DELETE",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        urllib.request.urlopen(request).close()
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


def test_javascript_client_seed_example(stack: Stack) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the JavaScript client")
    if not (JS_DIR / "node_modules" / "@elastic" / "elasticsearch").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True,
                       capture_output=True, timeout=300)
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
    health_url = stack.gateway_url + "/healthz"
    boot_before = json.loads(urllib.request.urlopen(health_url).read())["boot_id"]
    gateway = stack.services["gateway"]
    gateway.stop()
    gateway.start()
    health = json.loads(urllib.request.urlopen(stack.gateway_url + "/healthz").read())
    assert health["boot_id"] != boot_before
    assert Elasticsearch(stack.admin_url, bearer_auth=TOKEN).inference.get().body == before
    assert Elasticsearch(stack.gateway_url).inference.completion(
        inference_id="anthropic_completion", input="What is Elastic?"
    )["completion"][0]["result"] == EXPECTED
    assert oct((stack.work_dir / "state.json").stat().st_mode & 0o777) == "0o600"


def test_key_never_in_the_gateway_log(stack: Stack) -> None:
    # Runs after the others: the log (at debug level) holds all their traffic.
    text = stack.services["gateway"].log_text()
    assert "endpoint [anthropic_completion] created" in text
    assert API_KEY not in text

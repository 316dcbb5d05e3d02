"""The seed's three examples against the real CLI processes (``inference-operator
emulator`` and ``inference-operator gateway``): the official Python client, the official
JavaScript client and raw HTTP; then a restart with ``--state-file``."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

API_KEY = "sk-ant-cli-test-KEY-0b6d2a"
MODEL = "claude-sonnet-4-5"
TOKEN = "cli-admin-token"
JS_DIR = Path(__file__).parent / "js"
CLI = [sys.executable, "-m", "inference_operator.cli.main"]
EXPECTED = "Hello from the Anthropic emulator. You said: What is Elastic?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {process.stderr.read()}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Stack:
    emulator_url: str
    public: str
    admin: str
    state_file: Path
    log_file: Path
    gateway: subprocess.Popen
    gateway_args: list[str]

    def restart_gateway(self) -> None:
        self.stop_gateway()
        self.gateway = _start_gateway(self.gateway_args, self.log_file)
        wait_until_up(self.public + "/healthz", self.gateway)

    def stop_gateway(self) -> None:
        self.gateway.send_signal(signal.SIGTERM)
        self.gateway.wait(timeout=15)


def _start_gateway(args: list[str], log_file: Path) -> subprocess.Popen:
    log = log_file.open("a")
    return subprocess.Popen([*CLI, "gateway", *args], stdout=log, stderr=log, text=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("cli")
    emulator_port, port, admin_port = free_port(), free_port(), free_port()
    emulator = subprocess.Popen(
        [*CLI, "emulator", "--host", "127.0.0.1", "--port", str(emulator_port),
         "--api-key", API_KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    token_file = work / "admin-token"
    token_file.write_text(TOKEN + "\n")
    args = ["--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port),
            "--admin-token-file", str(token_file),
            "--anthropic-base-url", f"http://127.0.0.1:{emulator_port}",
            "--state-file", str(work / "state.json"), "--ready-without-sync",
            "--log-level", "debug"]
    log_file = work / "gateway.log"
    gateway = _start_gateway(args, log_file)
    running = Stack(f"http://127.0.0.1:{emulator_port}", f"http://127.0.0.1:{port}",
                    f"http://127.0.0.1:{admin_port}", work / "state.json", log_file,
                    gateway, args)
    try:
        wait_until_up(running.emulator_url + "/_emulator/requests", emulator)
        wait_until_up(running.public + "/healthz", gateway)
        yield running
    finally:
        for process in (running.gateway, emulator):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def delete_endpoint(stack: Stack) -> None:
    request = urllib.request.Request(stack.admin + "/_inference/anthropic_completion",
                                     method="DELETE",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        urllib.request.urlopen(request).close()
    except urllib.error.HTTPError as error:
        assert error.code == 404


def test_python_client_seed_example(stack: Stack) -> None:
    delete_endpoint(stack)
    client = Elasticsearch(stack.admin, bearer_auth=TOKEN)
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
    public = Elasticsearch(stack.public)
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
        [node, "seed_example.js", stack.admin, TOKEN, API_KEY, MODEL, "What is Elastic?"],
        cwd=JS_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"completion": [{"result": EXPECTED}]}


def test_raw_http_seed_example(stack: Stack) -> None:
    delete_endpoint(stack)
    body = {"service": "anthropic",
            "service_settings": {"api_key": API_KEY, "model_id": MODEL},
            "task_settings": {"max_tokens": 1024}}
    put = urllib.request.Request(
        stack.admin + "/_inference/completion/anthropic_completion", method="PUT",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(put) as response:
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"
        assert "api_key" not in response.read().decode()
    post = urllib.request.Request(
        stack.public + "/_inference/completion/anthropic_completion", method="POST",
        data=json.dumps({"input": "What is Elastic?"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post) as response:
        assert json.loads(response.read()) == {"completion": [{"result": EXPECTED}]}


def test_restart_with_state_file_keeps_endpoints(stack: Stack) -> None:
    client = Elasticsearch(stack.admin, bearer_auth=TOKEN)
    delete_endpoint(stack)
    client.inference.put(task_type="completion", inference_id="anthropic_completion",
                         inference_config={"service": "anthropic",
                                           "service_settings": {"api_key": API_KEY,
                                                                "model_id": MODEL},
                                           "task_settings": {"max_tokens": 1024}})
    before = client.inference.get().body
    boot_before = json.loads(urllib.request.urlopen(stack.public + "/healthz").read())["boot_id"]
    stack.restart_gateway()
    health = json.loads(urllib.request.urlopen(stack.public + "/healthz").read())
    assert health["boot_id"] != boot_before
    assert Elasticsearch(stack.admin, bearer_auth=TOKEN).inference.get().body == before
    assert Elasticsearch(stack.public).inference.completion(
        inference_id="anthropic_completion", input="What is Elastic?"
    )["completion"][0]["result"] == EXPECTED
    assert oct(stack.state_file.stat().st_mode & 0o777) == "0o600"


def test_key_never_in_the_gateway_log(stack: Stack) -> None:
    # Runs after the others: the log (at debug level) holds all their traffic.
    text = stack.log_file.read_text()
    assert "endpoint [anthropic_completion] created" in text
    assert API_KEY not in text

"""Start the product's own processes (emulator, gateway, operator) as a user would,
each with its log in a file; shared by ``inference-operator dev`` and the tests."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from inference_operator.controlplane.launcher import tail
from inference_operator.loopback import free_port


class ProcessFailed(RuntimeError):
    pass


@dataclass
class Service:
    """One ``inference-operator <command>`` child process."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 30.0) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "inference_operator.cli.main", *self.argv],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        if self.health_url:
            self.wait_healthy(wait)
        return self

    def wait_healthy(self, wait: float = 30.0) -> None:
        assert self.health_url is not None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessFailed(f"{self.name} exited\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise ProcessFailed(f"{self.name} not healthy within {wait:g}s\n{self.log_tail()}")

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.name} ({self.log_path}) ---\n{tail(self.log_path, lines)}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the crash case, no cleanup."""
        if self.running():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()

    def stop(self, grace: float = 10.0) -> None:
        if self.running():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Stack:
    """Emulator + gateway (+ operator): the data path and its control loop, on loopback."""

    work_dir: Path
    api_keys: tuple[str, ...]  # the keys the emulator accepts
    emulator_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    anthropic_base_url: str | None = None  # None: the emulator
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def token_file(self) -> Path:
        path = self.work_dir / "admin-token"
        if not path.exists():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(self.admin_token)
        return path

    def emulator(self) -> Service:
        return Service(
            "emulator",
            ["emulator", "--host", "127.0.0.1", "--port", str(self.emulator_port),
             *(f"--api-key={key}" for key in self.api_keys)],
            self.work_dir / "emulator.log",
            health_url=f"{self.emulator_url}/_emulator/latency",
        )

    def gateway(self, *extra: str) -> Service:
        return Service(
            "gateway",
            ["gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port),
             "--admin-port", str(self.admin_port), "--admin-token-file", str(self.token_file),
             "--anthropic-base-url", self.anthropic_base_url or self.emulator_url, *extra],
            self.work_dir / "gateway.log",
            health_url=f"{self.gateway_url}/healthz",
        )

    def operator(self, kubeconfig: Path, *extra: str) -> Service:
        return Service(
            "operator",
            ["run", "--gateway-admin-url", self.admin_url,
             "--gateway-admin-token-file", str(self.token_file),
             "--gateway-public-url", self.gateway_url,
             "--anthropic-base-url", self.anthropic_base_url or self.emulator_url,
             "--resync-seconds", "30", *extra],
            self.work_dir / "operator.log",
            env={"KUBECONFIG": str(kubeconfig)},
        )

    def start(self, service: Service, wait: float = 30.0) -> Service:
        self.services[service.name] = service
        return service.start(wait)

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    def log_tails(self) -> str:
        return "".join(s.log_tail() for s in self.services.values())

"""The one process supervisor: the product's own processes (emulator, gateway, operator)
started as a user would, each with its log in a file, waited for, measured (RSS, CPU) and
stopped; shared by ``inference-operator dev``, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from inference_devkit import procfs
from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.harnessstate import Harness
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.launcher import tail
from inference_devkit.loopback import DIRECT, free_port
from inference_devkit.waiting import poll
from inference_operator.api.gateway_config import Shards, empty_secret

CLI = (sys.executable, "-m", "inference_operator.cli.main")


class ProcessFailed(RuntimeError):
    pass


@dataclass
class Service:
    """One child process, its output in a log file: ``inference-operator <argv>``, or
    ``program`` with ``argv`` (the benchmark's LiteLLM). It leads a session of its own;
    stop and kill signal that whole process group, forks included."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str | None] = field(default_factory=dict)  # None: removed
    health_url: str | None = None  # start() waits until it answers 200
    program: tuple[str, ...] = CLI
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 30.0, harness: Harness | None = None) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [*self.program, *self.argv], cwd=self.cwd, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if harness is not None:
            harness.adopt(self.name, self.popen.pid)
        if self.health_url:
            self.wait_healthy(wait)
        return self

    def wait_healthy(self, wait: float = 30.0) -> None:
        url = self.health_url
        assert url is not None

        def healthy() -> bool:
            if not self.running():
                assert self.popen is not None
                raise ProcessFailed(
                    f"{self.name} exited with {self.popen.returncode}\n{self.log_tail()}")
            try:
                with DIRECT.open(url, timeout=1) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        try:
            poll(healthy, timeout=wait, interval=0.05)
        except TimeoutError:
            raise ProcessFailed(
                f"{self.name} not healthy within {wait:g}s\n{self.log_tail()}") from None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def rss_mib(self, *, field: str = "VmRSS", session: bool = False) -> float:
        return procfs.rss_mib(self.pid, field=field, session=session)

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.name} ({self.log_path}) ---\n{tail(self.log_path, lines)}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal_group(self, signum: int) -> None:
        # Only while our child is unreaped: its id (the group's) cannot be reused yet.
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the crash case, no cleanup."""
        if self.running():
            assert self.popen is not None
            self._signal_group(signal.SIGKILL)
            self.popen.wait()

    def stop(self, grace: float = 10.0) -> None:
        if self.running():
            assert self.popen is not None
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()


@dataclass
class Stack:
    """Emulator + gateway (+ operator): the data path and its control loop, on loopback.

    With a ``kubeconfig``, the gateway reads its endpoints from configuration Secrets in
    that cluster, which the operator writes, as in a cluster; without one it is the
    standalone gateway with its admin listener."""

    work_dir: Path
    api_keys: tuple[str, ...]  # the keys the emulator accepts
    kubeconfig: Path | None = None
    config_namespace: str = "default"
    # Own names per stack: several stacks may share one API server.
    config_secret: str = field(
        default_factory=lambda: f"gateway-config-{secrets.token_hex(3)}")
    emulator_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    gateway_metrics_port: int = field(default_factory=free_port)
    operator_metrics_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    anthropic_base_url: str | None = None  # None: the emulator
    services: dict[str, Service] = field(default_factory=dict)
    # `dev`: its control plane's harness records the services too, so the next `dev`
    # kills them when this one was killed.
    harness: Harness | None = None

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
    def gateway_metrics_url(self) -> str:
        """The gateway's metrics listener, as the chart's ServiceMonitor scrapes it (with
        --auth on, the public listener serves no /metrics)."""
        return f"http://127.0.0.1:{self.gateway_metrics_port}/metrics"

    @property
    def operator_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.operator_metrics_port}/metrics"

    @property
    def token_file(self) -> Path:
        path = self.work_dir / "admin-token"
        if not path.exists():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(self.admin_token)
        return path

    def emulator(self, *extra: str) -> Service:
        return Service(
            "emulator",
            ["emulator", "--host", "127.0.0.1", "--port", str(self.emulator_port),
             *(f"--api-key={key}" for key in self.api_keys), *extra],
            self.work_dir / "emulator.log",
            health_url=f"{self.emulator_url}/_emulator/latency",
        )

    def gateway(self, *extra: str) -> Service:
        # No Service to leave on loopback: stop at once.
        upstream = ["--anthropic-base-url", self.anthropic_base_url or self.emulator_url,
                    "--metrics-host", "127.0.0.1", "--metrics-port", str(self.gateway_metrics_port)]
        if self.kubeconfig is None:
            return Service(
                "gateway",
                ["gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port),
                 "--admin-port", str(self.admin_port), "--admin-token-file",
                 str(self.token_file), "--shutdown-delay", "0", *upstream, *extra],
                self.work_dir / "gateway.log",
                health_url=f"{self.gateway_url}/healthz",
            )
        self.create_config()
        return Service(
            "gateway",
            ["gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port),
             "--config-secret", self.config_secret, "--namespace", self.config_namespace,
             "--shutdown-delay", "0", *upstream, *extra],
            self.work_dir / "gateway.log",
            env={"KUBECONFIG": str(self.kubeconfig)},
            health_url=f"{self.gateway_url}/healthz",
        )

    def operator(self, *extra: str, kubeconfig: Path | None = None) -> Service:
        """``kubeconfig``: the operator's own identity, when not the stack's."""
        if self.kubeconfig is None:
            raise ValueError("the operator needs a Stack with a kubeconfig")
        self.create_config()
        return Service(
            "operator",
            ["run", "--gateway-config-secret", self.config_secret,
             "--gateway-config-namespace", self.config_namespace,
             "--gateway-status-url", self.gateway_url,
             "--gateway-metrics-url", f"http://127.0.0.1:{self.gateway_metrics_port}",
             "--gateway-public-url", self.gateway_url,
             "--anthropic-base-url", self.anthropic_base_url or self.emulator_url,
             "--resync-seconds", "30", "--metrics-address", "127.0.0.1",
             "--metrics-port", str(self.operator_metrics_port), *extra],
            self.work_dir / "operator.log",
            env={"KUBECONFIG": str(kubeconfig or self.kubeconfig)},
        )

    def create_config(self) -> None:
        """The configuration Secrets, empty, as the chart creates them; kept if there."""
        assert self.kubeconfig is not None
        # Applied without data, so what the operator wrote stays.
        Kubectl(binaries.resolve("kubectl"), self.kubeconfig).apply(
            [empty_secret(name, self.config_namespace)
             for name in Shards(self.config_secret).names()])

    def start(self, service: Service, wait: float = 30.0) -> Service:
        self.services[service.name] = service
        return service.start(wait, harness=self.harness)

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    def log_tails(self) -> str:
        return "".join(s.log_tail() for s in self.services.values())

"""A thin wrapper over the real ``kubectl``, so tests and ``dev`` do what users do."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlError(RuntimeError):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def to_yaml(manifests: str | dict[str, Any] | Iterable[dict[str, Any]]) -> str:
    if isinstance(manifests, str):
        return manifests
    if isinstance(manifests, dict):
        manifests = [manifests]
    return yaml.safe_dump_all(list(manifests), sort_keys=False)


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            [str(self.binary), *argv], input=stdin, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result.returncode, result.stderr)
        return result

    def apply(
        self, manifests: str | dict[str, Any] | Iterable[dict[str, Any]],
        namespace: str | None = None, *extra: str, check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = ["apply", "-f", "-", *extra]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, stdin=to_yaml(manifests), check=check)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", resource, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self.run(*args).stdout)

    def wait_for_condition(
        self, resource: str, condition: str, namespace: str | None = None,
        timeout: float = 60, status: str = "True",
    ) -> None:
        """``kubectl wait --for=condition=...``, exactly as a user or CI script would."""
        args = [
            "wait", resource, f"--for=condition={condition}={status}", f"--timeout={timeout:g}s"
        ]
        if namespace:
            args += ["-n", namespace]
        self.run(*args, timeout=timeout + 10)


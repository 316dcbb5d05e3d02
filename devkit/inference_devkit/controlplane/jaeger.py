"""Jaeger v2, the real trace receiver of the tracing tests (tests/tracing/) and the
tracing benchmark: an OpenTelemetry Collector distribution with the OTLP receiver, an
in-memory store and its query API, built once from the pinned Go module in
``devkit/envtest/jaeger`` into the cache, like the control-plane binaries (binaries.py).
``running_jaeger`` runs it with each port on loopback (its all-in-one default binds fixed
ports on every interface).

``python -m inference_devkit.controlplane.jaeger`` builds it when missing (``make
jaeger``) and prints its path, or says why it cannot (then the tracing tests skip)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.binaries import JAEGER
from inference_devkit.devstack.processes import Service
from inference_devkit.loopback import DIRECT, free_port

# What resolve() builds, and who needs it (prebuild.py, make test's background build).
BINARIES = (JAEGER,)
NEEDED_BY = "the tracing tests (tests/tracing/)"

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"""


@dataclass(frozen=True)
class Jaeger:
    binary: Path


def resolve(out=sys.stderr) -> Jaeger:
    """The binary, built once; BinaryUnavailable when it cannot be built here."""
    return Jaeger(binaries.resolve(JAEGER, out=out))


@dataclass
class RunningJaeger:
    service: Service
    otlp_url: str  # where processes send spans (OTLP/HTTP)
    query_url: str

    def exporting_env(self) -> dict[str, str | None]:
        """What a process needs to send it every span, promptly (the SDK's batch delay is
        5 s by default)."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_url, "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_TRACES_SAMPLER": None, "OTEL_SDK_DISABLED": None}

    def get(self, path: str) -> str | None:
        """The query API's answer to ``path``; None for a 404 (nothing stored yet)."""
        try:
            with DIRECT.open(self.query_url + path, timeout=5) as answer:
                return answer.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise


@contextmanager
def running_jaeger(work_dir: Path) -> Iterator[RunningJaeger]:
    ports = {"otlp": free_port(), "query": free_port(), "query_grpc": free_port()}
    config = work_dir / "jaeger.yaml"
    work_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG.format(**ports))
    query_url = f"http://127.0.0.1:{ports['query']}"
    service = Service("jaeger", ["--config", str(config)], work_dir / "jaeger.log",
                      health_url=f"{query_url}/api/v3/services",
                      program=(str(resolve().binary),))
    try:
        service.start(wait=60)
        yield RunningJaeger(service, f"http://127.0.0.1:{ports['otlp']}", query_url)
    finally:
        service.stop()


if __name__ == "__main__":
    binaries.print_or_skip("jaeger", NEEDED_BY, resolve)

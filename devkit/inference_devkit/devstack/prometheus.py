"""A Prometheus server scraping a local stack's gateway and operator, for ``inference-operator
dev --prometheus`` (live graphs while trying the product) and the tests that evaluate the
dashboard's and the alerts' queries against real series (tests/observability/).

Debian's ``prometheus`` package provides the binary (``make prometheus-packages``); it runs
under the one process supervisor (processes.py) like the product's own processes."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from inference_devkit.devstack.processes import Service
from inference_devkit.loopback import DIRECT, free_port

INSTALL_HINT = ("Prometheus is not installed: `make prometheus-packages` installs Debian's "
                "package (as root), or put a `prometheus` binary on PATH")


def binary() -> str | None:
    return shutil.which("prometheus")


def config(targets: Mapping[str, str], interval: str) -> dict[str, Any]:
    """Scrape each ``job: host:port`` (its /metrics) every ``interval``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }


def service(work_dir: Path, targets: Mapping[str, str], *, interval: str = "5s",
            port: int | None = None) -> Service:
    """The server as a supervised process; ``targets``: job name to ``host:port``."""
    program = binary()
    if program is None:
        raise FileNotFoundError(INSTALL_HINT)
    port = port or free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config(targets, interval), sort_keys=False))
    return Service(
        "prometheus",
        [f"--config.file={config_file}", f"--storage.tsdb.path={work_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
        work_dir / "prometheus.log", program=(program,),
        health_url=f"http://127.0.0.1:{port}/-/ready")


def url(server: Service) -> str:
    """The server's base URL (from its health URL)."""
    assert server.health_url is not None
    return server.health_url.removesuffix("/-/ready")


def query(server: Service, expression: str) -> list[dict[str, Any]]:
    """The instant vector (or scalar, as one sample) ``expression`` evaluates to now;
    ValueError with Prometheus' message when it does not parse or evaluate."""
    target = f"{url(server)}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with DIRECT.open(target, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        answer = json.load(error)
    if answer.get("status") != "success":
        raise ValueError(f"{expression}: {answer.get('error')}")
    data = answer["data"]
    return data["result"] if data["resultType"] in ("vector", "matrix") else [data]

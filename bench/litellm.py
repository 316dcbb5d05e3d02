"""LiteLLM proxy as the peer: installed by the bench into its own throwaway venv under
``.cache/`` (never a dependency of the product) and run offline, one worker, against the
same emulator."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.harness import install_venv
from inference_devkit.devstack.processes import ProcessFailed, Service

# The version measured in the reference.
SPEC = "litellm[proxy]==1.108.7"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 120.0
STOP_GRACE = 20.0

# Every switch that keeps LiteLLM from fetching remote config or sending telemetry.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}


class Unavailable(Exception):
    """LiteLLM could not be installed or started; the message says why."""


def ensure_installed(venv: Path, log: Path) -> None:
    """LiteLLM (``SPEC``, pinned) in ``venv``, installed first when missing or different."""
    if not (venv / ".installed-spec").exists():
        print(f"installing {SPEC} into {venv} (once; ~1 min, ~750 MB; log: {log})",
              flush=True)
    try:
        install_venv(venv, [SPEC], log, INSTALL_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as error:
        raise Unavailable(f"cannot install {SPEC}: {error} (see {log})") from None


@dataclass
class LiteLLM:
    service: Service
    url: str
    master_key: str


def start(venv: Path, *, port: int, upstream: str, model: str, api_key: str,
          log: Path) -> LiteLLM:
    """One worker on 127.0.0.1:port, routing ``model`` to the emulator at ``upstream``;
    returns once it answers, raises Unavailable when it exits or the time runs out."""
    work = Path(tempfile.mkdtemp(prefix="litellm-bench-"))
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": model, "litellm_params": {
            "model": f"anthropic/{model}", "api_base": upstream, "api_key": api_key}}],
        "litellm_settings": {"drop_params": True},
    }))
    master_key = "sk-" + secrets.token_hex(32)  # it refuses to start without one
    url = f"http://127.0.0.1:{port}"
    log.unlink(missing_ok=True)
    service = Service(
        "LiteLLM", ["--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                    "--num_workers", "1"], log,
        env={**_OFFLINE_ENV, "LITELLM_MASTER_KEY": master_key,
             **{k: None for k in os.environ
                if k.lower() in ("http_proxy", "https_proxy", "all_proxy")}},
        health_url=f"{url}/health/liveliness", program=(str(venv / "bin" / "litellm"),),
        cwd=work)
    try:
        service.start(START_TIMEOUT)
    except ProcessFailed as error:
        service.stop(STOP_GRACE)
        raise Unavailable(f"{str(error).splitlines()[0]} (see {log})") from None
    return LiteLLM(service, url, master_key)

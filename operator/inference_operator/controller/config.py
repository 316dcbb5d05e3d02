"""How the operator is wired to its gateway and upstream. Its defaults are the ``run``
subcommand's (cli/run.py reads them from here); flags or ``INFERENCE_OPERATOR_*`` set the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inference_operator.anthropic_api import ANTHROPIC_API_URL


@dataclass(frozen=True)
class OperatorConfig:
    gateway_admin_url: str = "http://127.0.0.1:9201"
    gateway_admin_token_file: Path | None = None
    # What clients use; written into each endpoint's status.url.
    gateway_public_url: str = "http://inference-operator-gateway:9200"
    anthropic_base_url: str = ANTHROPIC_API_URL
    verify_upstream: bool = True
    resync_seconds: float = 120.0
    gateway_poll_seconds: float = 1.0
    namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: all namespaces

    def admin_token(self) -> str:
        if self.gateway_admin_token_file is None:
            return ""
        return self.gateway_admin_token_file.read_text().strip()

    def endpoint_url(self, inference_id: str, task_type: str) -> str:
        return f"{self.gateway_public_url.rstrip('/')}/_inference/{task_type}/{inference_id}"

"""Who may call the public listener (``--auth``, docs/gateway.md "Who may call").

- ``none``: anybody who can reach it (an explicit opt-out, for trusted networks).
- ``kubernetes``: a Kubernetes token as ``Bearer``, checked by TokenReview, and RBAC verb
  ``invoke`` on the endpoint's InferenceEndpoint, checked by SubjectAccessReview
  (auth/kubernetes.py).
- ``api-keys``: Elasticsearch-style API keys from a file (auth/apikeys.py).

Light on purpose: the Kubernetes client (lightkube) is imported in kubernetes mode only."""

from __future__ import annotations

from pathlib import Path

NONE, KUBERNETES, API_KEYS = "none", "kubernetes", "api-keys"
MODES = (NONE, KUBERNETES, API_KEYS)
DEFAULT_AUDIENCE = "inference-operator"
DEFAULT_CACHE_SECONDS = 10.0
DEFAULT_CACHE_SIZE = 10_000


def config_problem(mode: str, *, audience: str, cache_seconds: float, cache_size: int,
                   api_keys_file: Path | None) -> str | None:
    """What is inconsistent in the options, in their words; None when nothing is."""
    if mode not in MODES:
        return f"--auth must be one of {', '.join(MODES)}, not {mode!r}"
    if mode == API_KEYS and api_keys_file is None:
        return "--auth api-keys needs --api-keys-file (the keys callers may present)"
    if mode != API_KEYS and api_keys_file is not None:
        return (f"--api-keys-file goes with --auth api-keys; with --auth {mode} the keys "
                "would be ignored")
    if mode == KUBERNETES and not audience:
        return "--auth-audience must not be empty: tokens meant for anybody would do"
    if cache_seconds < 0:
        return "--auth-cache-seconds must be 0 (no caching) or more"
    if cache_size < 1:
        return "--auth-cache-size must be at least 1"
    return None

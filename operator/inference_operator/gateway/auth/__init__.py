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
# Refusals are what a flood of junk makes: a room of their own, smaller, so they can never
# evict a caller who was let in (auth/cache.py).
DEFAULT_NEGATIVE_CACHE_SIZE = 1_000
# TokenReviews of tokens the gateway does not know (auth/budget.py): a small share of the
# API server's default 200 mutating requests in flight; 20 per second lets a rollout of
# hundreds of new Pods in within seconds (beyond: 429, which Elasticsearch clients retry).
DEFAULT_REVIEWS_IN_FLIGHT = 8
DEFAULT_REVIEWS_PER_SECOND = 20.0


def config_problem(mode: str, *, audience: str, cache_seconds: float, cache_size: int,
                   negative_cache_size: int, reviews_in_flight: int,
                   reviews_per_second: float, api_keys_file: Path | None) -> str | None:
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
    if negative_cache_size < 1:
        return "--auth-negative-cache-size must be at least 1"
    if reviews_in_flight < 1:
        return "--auth-reviews-in-flight must be at least 1"
    if not reviews_per_second > 0:
        return "--auth-reviews-per-second must be more than 0"
    return None

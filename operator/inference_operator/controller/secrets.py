"""Resolve an endpoint's API key from the Secret it references (same namespace only)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_operator.api.models import Reason
from inference_operator.api.settings import DEFAULT_SECRET_KEY
from inference_operator.controller.conditions import Outcome
from inference_operator.controller.kube import Kube, SecretValue


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str


@dataclass(frozen=True)
class ResolvedKey:
    api_key: str
    secret_resource_version: str

    def __repr__(self) -> str:  # never let a debug log print the key
        return f"ResolvedKey(secret_resource_version={self.secret_resource_version!r})"


def secret_ref(namespace: str, spec: Mapping[str, Any]) -> SecretRef | None:
    try:
        ref = spec["service_settings"]["api_key"]["secret_key_ref"]
        return SecretRef(namespace, ref["name"], ref.get("key") or DEFAULT_SECRET_KEY)
    except (KeyError, TypeError):
        return None


def key_from(ref: SecretRef, secret: SecretValue | None) -> ResolvedKey | Outcome:
    if secret is None:
        return Outcome.waiting(
            Reason.SECRET_NOT_FOUND,
            f"Secret {ref.name!r} not found in namespace {ref.namespace!r}; "
            "the endpoint is served as soon as it exists",
        )
    encoded = secret.data.get(ref.key)
    if encoded is None:
        return Outcome.waiting(
            Reason.SECRET_KEY_MISSING,
            f"Secret {ref.name!r} has no key {ref.key!r} "
            f"(it has: {', '.join(sorted(secret.data)) or 'no keys'})",
        )
    try:
        api_key = base64.b64decode(encoded, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        api_key = ""
    if not api_key:
        return Outcome.waiting(
            Reason.SECRET_KEY_MISSING,
            f"key {ref.key!r} of Secret {ref.name!r} is empty or not UTF-8 text",
        )
    return ResolvedKey(api_key, secret.resource_version)


class SecretCache:
    """The referenced Secrets as the watch last delivered them, so a reconcile reads
    no Secret from the API server; a miss (a reference newer than the last event) is
    read once. Only referenced Secrets are kept; ``None`` records a known absence."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._secrets: dict[tuple[str, str], SecretValue | None] = {}

    def observed(self, namespace: str, name: str, secret: SecretValue | None) -> None:
        self._secrets[(namespace, name)] = secret

    async def resolve_key(self, ref: SecretRef) -> ResolvedKey | Outcome:
        cache_key = (ref.namespace, ref.name)
        if cache_key not in self._secrets:
            self._secrets[cache_key] = await self._kube.read_secret(ref.namespace, ref.name)
        return key_from(ref, self._secrets[cache_key])

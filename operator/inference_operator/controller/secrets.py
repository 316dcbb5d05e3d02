"""Resolve an endpoint's API key from the Secret it references (same namespace only)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_operator.api.models import Reason
from inference_operator.api.settings import API_KEY_RULE, DEFAULT_SECRET_KEY, api_key_is_valid
from inference_operator.controller.conditions import Outcome
from inference_operator.controller.kube import Kube, SecretValue

SecretKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str

    @property
    def secret(self) -> SecretKey:
        return self.namespace, self.name


@dataclass(frozen=True)
class ResolvedKey:
    api_key: str
    ref: SecretRef
    secret_resource_version: str

    def __repr__(self) -> str:  # never let a debug log print the key
        return (f"ResolvedKey(ref={self.ref!r}, "
                f"secret_resource_version={self.secret_resource_version!r})")


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
    if not api_key_is_valid(api_key):
        # Checked here too: published, it would make the gateways refuse its whole shard.
        return Outcome.waiting(
            Reason.SECRET_KEY_INVALID,
            f"key {ref.key!r} of Secret {ref.name!r} must hold {API_KEY_RULE}",
        )
    return ResolvedKey(api_key, ref, secret.resource_version)


SecretKey = tuple[str, str]  # (namespace, name)


class SecretCache:
    """The referenced Secrets as the watch last delivered them, so a reconcile reads no
    Secret from the API server; a miss (a reference newer than the last event) is read
    once. ``None`` records a known absence. The controller drops a copy as soon as no
    endpoint references its Secret (whose events it then stops following)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._secrets: dict[SecretKey, SecretValue | None] = {}

    def observed(self, secret: SecretKey, value: SecretValue | None) -> None:
        self._secrets[secret] = value

    def drop(self, secret: SecretKey) -> None:
        self._secrets.pop(secret, None)

    def cached(self) -> set[SecretKey]:
        return set(self._secrets)

    async def resolve_key(self, ref: SecretRef) -> ResolvedKey | Outcome:
        secret = ref.secret
        if secret not in self._secrets:
            value = await self._kube.read_secret(ref.namespace, ref.name)
            # An event that arrived during the read is newer than what the read returned.
            self._secrets.setdefault(secret, value)
        return key_from(ref, self._secrets[secret])

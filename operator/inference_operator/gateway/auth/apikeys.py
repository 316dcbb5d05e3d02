"""``--auth api-keys``: Elasticsearch-style API keys for a gateway without Kubernetes.

Clients send ``Authorization: ApiKey base64(id:key)``, which is what the Elasticsearch
clients make of ``api_key=(id, key)`` (or send as given, the encoded form). The keys file
(``--api-keys-file``, YAML or JSON, read once at start) holds each key hashed, with the
endpoints it may call::

    api_keys:
      - id: team-a
        key_hash: sha256:<64 hex digits>
        inference_ids: [anthropic_completion]   # or ["*"]: every endpoint

Make an entry (the key goes to stderr, for the caller; the entry to stdout, to append to a
file that starts with the line ``api_keys:``)::

    python -m inference_operator.gateway.auth.apikeys new team-a anthropic_completion \
        >> keys.yaml

or hash a key of your own (32 random bytes or more)::

    python -c 'import hashlib, sys
    print("sha256:" + hashlib.sha256(sys.argv[1].encode()).hexdigest())' KEY

Why SHA-256 and not bcrypt: the keys are random with 256 bits of entropy, so a fast hash
cannot be inverted or brute-forced either; a deliberately slow hash protects guessable
passwords, and would cost every request ~100 ms of CPU (or a cache of verified keys that
is as good as the keys). The stored hash is compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference_operator.gateway import errors
from inference_operator.gateway.auth.caller import API_KEY_NAMESPACE, Caller
from inference_operator.gateway.auth.credentials import credentials

if TYPE_CHECKING:
    from inference_operator.gateway.endpoints import Endpoint

HASH_PREFIX = "sha256:"
EVERY_ENDPOINT = "*"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The id travels before the first ":" of the decoded credentials, so it has none.
    id: str = Field(min_length=1, max_length=256, pattern=r"^[^:\s]+$")
    key_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    inference_ids: tuple[str, ...] = Field(min_length=1)

    @field_validator("inference_ids")
    @classmethod
    def _named(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        if not all(isinstance(i, str) and i for i in ids):
            raise ValueError("inference ids are non-empty strings")
        return ids


class ApiKeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_keys: list[ApiKey]


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def load(path: Path) -> list[ApiKey]:
    """ValueError naming the file and the problem (never a key: the file holds hashes)."""
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"--api-keys-file {path}: cannot read it: {error}") from None
    try:
        keys = ApiKeysFile.model_validate(content).api_keys
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in error.errors())
        raise ValueError(f"--api-keys-file {path}: {problems}") from None
    seen: set[str] = set()
    for key in keys:
        if key.id in seen:
            raise ValueError(f"--api-keys-file {path}: the id [{key.id}] is there twice")
        seen.add(key.id)
    return keys


class ApiKeyAccess:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._hashes = {k.id: bytes.fromhex(k.key_hash[len(HASH_PREFIX):]) for k in keys}
        self._allowed = {k.id: frozenset(k.inference_ids) for k in keys}
        # Compared against when the id is unknown, so that costs what a wrong key costs.
        self._nothing = secrets.token_bytes(32)

    async def authenticate(self, authorization: str | None, path: str) -> Caller:
        given, encoded = credentials(authorization, "ApiKey")
        if encoded is None:
            raise errors.unauthenticated(path, errors.API_KEY_CHALLENGE, given=given)
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, ValueError):
            raise errors.unauthenticated(path, errors.API_KEY_CHALLENGE, given=True) from None
        key_id, colon, key = decoded.partition(":")
        expected = self._hashes.get(key_id, self._nothing)
        matches = hmac.compare_digest(hashlib.sha256(key.encode()).digest(), expected)
        if not (colon and matches and key_id in self._hashes):
            raise errors.unauthenticated(path, errors.API_KEY_CHALLENGE, given=True)
        return Caller(f"api-key:{key_id}", API_KEY_NAMESPACE, key_id)

    def _may(self, caller: Caller, inference_id: str) -> bool:
        allowed = self._allowed.get(caller.account, frozenset())
        return EVERY_ENDPOINT in allowed or inference_id in allowed

    async def authorize(self, caller: Caller, inference_id: str,
                        endpoint: Endpoint | None) -> None:
        # By id, as Elasticsearch's privileges are by name: whether the endpoint exists
        # is told only to keys that may call it.
        if not self._may(caller, inference_id):
            raise errors.forbidden(caller.name, inference_id,
                                   "the API key does not list it in its inference_ids")

    async def visible(self, caller: Caller, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if self._may(caller, e.inference_id)]


def _new(key_id: str, inference_ids: list[str]) -> int:
    key = secrets.token_urlsafe(32)
    try:
        entry = ApiKey(id=key_id, key_hash=hash_key(key),
                       inference_ids=tuple(inference_ids or [EVERY_ENDPOINT]))
    except ValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    encoded = base64.b64encode(f"{key_id}:{key}".encode()).decode()
    print(f"API key for {key_id} (not stored anywhere; give it to the caller):\n"
          f"  Elasticsearch(..., api_key=({key_id!r}, {key!r}))\n"
          f"  Authorization: ApiKey {encoded}", file=sys.stderr)
    print(yaml.safe_dump([entry.model_dump(mode="json") | {
        "inference_ids": list(entry.inference_ids)}], sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "new":
        print("usage: python -m inference_operator.gateway.auth.apikeys new ID "
              "[INFERENCE_ID ...]  (none: every endpoint)", file=sys.stderr)
        sys.exit(2)
    sys.exit(_new(sys.argv[2], sys.argv[3:]))

"""Reading an ``Authorization`` header, and what may be known about a token without
asking anybody: a cache key that is not the token, and a JWT's expiry."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets

# RFC 6750's b64token, what Kubernetes tokens (JWTs, bootstrap tokens) are made of; a
# credential of other characters is refused without a review.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Keys the cache's digests: even with the process's memory, a digest cannot be checked
# against a guessed token (as Kubernetes' own token cache, which uses an HMAC).
_DIGEST_KEY = secrets.token_bytes(32)


def credentials(authorization: str | None, scheme: str) -> tuple[bool, str | None]:
    """(whether any credentials were sent, those of ``scheme`` when well formed)."""
    if not authorization or not authorization.strip():
        return False, None
    given, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if given.lower() != scheme.lower() or not _TOKEN.fullmatch(value):
        return True, None
    return True, value


def digest(token: str) -> bytes:
    return hashlib.blake2b(token.encode(), key=_DIGEST_KEY, digest_size=32).digest()


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT's payload (seconds since the epoch), read without checking the
    signature: only ever used to keep a decision for less time, never to trust the token.
    None when the token is not a JWT or has no usable ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return None
        seconds = float(exp)
    except (ValueError, binascii.Error, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None

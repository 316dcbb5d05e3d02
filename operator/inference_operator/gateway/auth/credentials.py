"""Reading an ``Authorization`` header, and what may be known about a token without
asking anybody: a cache key that is not the token, a JWT's expiry, and whether it can be
a Kubernetes token meant for the gateway at all.

Only a JWT can be: ServiceAccount tokens (TokenRequest, projected) and OIDC tokens are
JWTs that name their audience and expiry. Bootstrap tokens (``abcdef.0123456789abcdef``),
static token files and the legacy ServiceAccount token Secrets (no ``aud``, no ``exp``)
carry no audience: they are credentials for the API server itself, which a caller must
never hand to another service, so they are refused here, unreviewed. What is read here
is not verified (the signature is the API server's business): it is only ever used to
refuse early or to keep a decision for less time, never to let anybody in."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from typing import Any

# RFC 6750's b64token, what Kubernetes tokens (JWTs, bootstrap tokens) are made of; a
# credential of other characters is refused without a review.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# A JWS compact serialization's segment: base64url without padding.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# The longest token reviewed: a projected ServiceAccount token is about 1 KiB, an OIDC
# token with a long groups claim a few KiB; aiohttp refuses a header line over 8,190 bytes
# anyway. Longer ones are refused before anything is decoded.
MAX_TOKEN_LENGTH = 8000
# The JWS algorithms of the API server's ServiceAccount keys (RSA, ECDSA) and of OIDC
# issuers: asymmetric, so never "none" nor an HMAC a forger could pick.
_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA"})
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


def _segment(text: str) -> Any:
    """A JWT segment's JSON; None when it is not base64url of JSON."""
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None


def _expiry(payload: Any) -> float | None:
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        seconds = float(exp)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking the signature (so never to trust the token);
    empty when it is no JWT."""
    parts = token.split(".")
    claims = _segment(parts[1]) if len(parts) == 3 else None
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT's payload (seconds since the epoch), read without checking the
    signature: only ever used to keep a decision for less time, never to trust the token.
    None when the token is not a JWT or has no usable ``exp``."""
    return _expiry(jwt_claims(token))


def unusable(token: str, audience: str, now: float) -> str | None:
    """Why ``token`` cannot be a Kubernetes token for ``audience`` that is valid at
    ``now`` (for the debug log; never quotes it), or None when it may be one: which
    only means that a TokenReview is worth asking."""
    if len(token) > MAX_TOKEN_LENGTH:
        return f"longer than {MAX_TOKEN_LENGTH} characters"
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        return "not a JWT (three base64url segments)"
    header, payload = _segment(parts[0]), _segment(parts[1])
    if not isinstance(header, dict) or header.get("alg") not in _ALGORITHMS:
        return "its header names no asymmetric signing algorithm"
    if not isinstance(header.get("kid", ""), str):
        return "its header's key id is not a string"
    if not isinstance(payload, dict):
        return "its claims are not a JSON object"
    expiry = _expiry(payload)
    if expiry is None:
        return "it has no expiry"
    if expiry <= now:
        return "it has expired"
    audiences = payload.get("aud")
    if not (audiences == audience or (isinstance(audiences, list) and audience in audiences)):
        return f"it is not meant for the audience {audience}"
    return None

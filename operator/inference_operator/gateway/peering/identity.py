"""Who may link as a peer: a gateway of the same fleet, which proves it with its
ServiceAccount token for the peers' audience (a projected token kubelet rotates; read
again at every link) and must be the ServiceAccount this gateway's own token names. The
token is checked by a TokenReview, with the caches and the budget for unknown tokens that
callers' tokens have (auth/kubernetes.py): a flood of made-up tokens on the peer port
costs the API server no more than the budget allows."""

from __future__ import annotations

from pathlib import Path

from lightkube import AsyncClient

from inference_operator.gateway.auth.budget import ReviewBudget
from inference_operator.gateway.auth.credentials import jwt_claims
from inference_operator.gateway.auth.kubernetes import KubernetesAccess
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.peering import wire

AUDIENCE = "inference-operator.dev/gateway-peers"
# Peers link once per peer and process: a handful of reviews, however large the fleet.
REVIEWS_IN_FLIGHT, REVIEWS_PER_SECOND = 4, 2.0
CACHE_SECONDS, CACHE_SIZE = 300.0, 64


def read_token(path: Path) -> str:
    return path.read_text().strip()


def account_of(token: str) -> str:
    """The user a ServiceAccount token names (its ``sub``), read without checking it: only
    ever this gateway's own token, to know which account its peers must be. ValueError when
    it names none."""
    subject = jwt_claims(token).get("sub")
    if not isinstance(subject, str) or not subject.startswith("system:serviceaccount:"):
        raise ValueError("the peer token is not a ServiceAccount token (no "
                         "system:serviceaccount: subject)")
    return subject


class PeerIdentity:
    def __init__(self, api: AsyncClient, metrics: GatewayMetrics, account: str,
                 audience: str = AUDIENCE) -> None:
        self.account = account
        self._access = KubernetesAccess(
            api, metrics, audience=audience, cache_seconds=CACHE_SECONDS,
            cache_size=CACHE_SIZE, negative_cache_size=CACHE_SIZE,
            reviews=ReviewBudget(REVIEWS_IN_FLIGHT, REVIEWS_PER_SECOND))

    async def is_peer(self, authorization: str | None) -> bool:
        try:
            caller = await self._access.authenticate(authorization, wire.PATH)
        except ESError:  # unauthenticated, over budget, or the API server unreachable
            return False
        return caller.name == self.account


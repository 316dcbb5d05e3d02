"""``--auth kubernetes``: callers present a Kubernetes token (normally their Pod's
projected ServiceAccount token with the audience ``inference-operator``) as ``Bearer``;
a TokenReview tells who they are, a SubjectAccessReview whether RBAC lets them
``invoke`` the InferenceEndpoint that owns the endpoint. As kube-rbac-proxy does, and
Kubernetes' own delegated authentication: ``spec.audiences`` is set and the answer's
``status.audiences`` must hold it (an authenticator that ignored the audience would
otherwise accept a token meant for somebody else).

Both decisions are cached, positive and negative, for ``cache_seconds`` (and a token's
never past its ``exp``), so revoking a RoleBinding stops access within that time; see
auth/cache.py for the bounds. What the API server is asked is bounded whatever callers
send: a token that cannot be a Kubernetes token for the audience is refused unasked
(auth/credentials.py); reviews of tokens the gateway does not know are bounded in flight
and per second (auth/budget.py); a listing asks one review per namespace and at most
``LISTING_NAME_REVIEWS`` by name. Reviews go through lightkube's async client, never
blocking the event loop; nothing on that path logs a body (the request holds the token,
and the API server sends it back in ``spec``), and its errors are logged by code and
Status message, the token masked should the message quote it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from inference_operator.gateway import errors
from inference_operator.gateway.auth.budget import ReviewBudget
from inference_operator.gateway.auth.cache import DecisionCache
from inference_operator.gateway.auth.caller import Caller, UserInfo, kubernetes_caller
from inference_operator.gateway.auth.credentials import (
    credentials,
    digest,
    jwt_expiry,
    unusable,
)
from inference_operator.gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from inference_operator.gateway.endpoints import Endpoint

log = logging.getLogger(__name__)

GROUP = "inference-operator.dev"
RESOURCE = "inferenceendpoints"
VERB = "invoke"
REVIEW_SECONDS = 5.0  # a review's whole call, connecting included
# A listing's reviews: this many at a time, so one listing cannot flood the API server;
# and, where a namespace is not granted whole, at most this many by name per listing (the
# caller's own namespace first; decisions already kept are used without asking). An
# endpoint neither granted nor reviewed is not listed: a caller granted single names in
# many namespaces sees them all once it has called them, or after a few listings.
LISTING_REVIEWS_IN_FLIGHT = 16
LISTING_NAME_REVIEWS = 16
_WARN_EVERY = 30.0  # seconds between two warnings that reviews fail: not one per request

_HIDDEN = (f"it does not exist, or RBAC grants the user no [{VERB}] on its "
           f"InferenceEndpoint (kubectl auth can-i {VERB} {RESOURCE}/NAME -n NAMESPACE "
           f"--as USER)")
_NO_OWNER = ("it was not made from an InferenceEndpoint (it has no owner), so no caller may "
             "invoke it with --auth kubernetes")


class KubernetesAccess:
    def __init__(self, api: AsyncClient, metrics: GatewayMetrics, *, audience: str,
                 cache_seconds: float, cache_size: int, negative_cache_size: int,
                 reviews: ReviewBudget,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._api = api
        self._metrics = metrics
        self.audience = audience
        self.cache_seconds = cache_seconds
        self._wall = wall
        self._reviews = reviews
        self._users: DecisionCache[bytes, UserInfo | None] = DecisionCache(
            cache_size, negative_cache_size, positive=_is_user, clock=clock)
        self._decisions: DecisionCache[tuple[UserInfo, str, str], bool] = DecisionCache(
            cache_size, negative_cache_size, clock=clock)
        # Tokens that authenticated, until their exp: asked again after cache_seconds
        # (a deleted ServiceAccount), but outside the budget of unknown tokens.
        self._known: DecisionCache[bytes, bool] = DecisionCache(cache_size, 1, clock=clock)
        self._listing = asyncio.Semaphore(LISTING_REVIEWS_IN_FLIGHT)
        self._warned = -_WARN_EVERY

    # -- authentication ----------------------------------------------------------------

    async def authenticate(self, authorization: str | None, path: str) -> Caller:
        given, token = credentials(authorization, "Bearer")
        if token is None:
            raise errors.unauthenticated(path, errors.BEARER_CHALLENGE, given=given)
        key = digest(token)
        found, user = self._users.cached(key)  # kept no longer than the token's exp
        if not found:
            problem = unusable(token, self.audience, self._wall())
            if problem is not None:
                self._metrics.auth_unreviewed.labels("not_a_token").inc()
                log.debug("a bearer token refused unreviewed: %s", problem)
                raise errors.unauthenticated(path, errors.BEARER_CHALLENGE, given=True)
            user = await self._users.get(key, lambda: self._review_token(token, key))
        if user is None:
            raise errors.unauthenticated(path, errors.BEARER_CHALLENGE, given=True)
        return kubernetes_caller(user)

    async def _review_token(self, token: str, key: bytes) -> tuple[UserInfo | None, float]:
        review = TokenReview(spec=TokenReviewSpec(token=token, audiences=[self.audience]))
        if self._known.cached(key)[1]:
            status = await self._review(review, "token", token)
        else:
            try:
                with self._reviews.spend():
                    status = await self._review(review, "token", token)
            except errors.ESError as error:
                if error.status == 429:
                    self._metrics.auth_unreviewed.labels("over_budget").inc()
                raise
        user = _user(status) if (status.get("authenticated") is True and self.audience
                                 in (status.get("audiences") or ())) else None
        self._metrics.auth_reviews.labels("token", "denied" if user is None else "allowed").inc()
        # A token that reaches a review has an exp (auth/credentials.py).
        lifetime = (jwt_expiry(token) or 0.0) - self._wall()
        self._known.put(key, user is not None, lifetime)
        return user, min(self.cache_seconds, lifetime)

    # -- authorization -----------------------------------------------------------------

    async def authorize(self, caller: Caller, inference_id: str,
                        endpoint: Endpoint | None) -> None:
        # A missing endpoint gets the answer of a forbidden one: otherwise any caller
        # could tell which ids other teams use by trying them.
        if endpoint is None:
            raise errors.forbidden(caller.name, inference_id, _HIDDEN)
        if endpoint.owner is None:
            raise errors.forbidden(caller.name, inference_id, _NO_OWNER)
        if not await self._allowed(_user_of(caller), endpoint.owner.namespace,
                                   endpoint.owner.name):
            raise errors.forbidden(caller.name, inference_id, _HIDDEN)

    async def visible(self, caller: Caller, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """One namespace-wide review per owner namespace (name ""); where that allows,
        every endpoint there is visible; elsewhere, decisions kept by name count, and at
        most ``LISTING_NAME_REVIEWS`` more are asked, the caller's namespace first."""
        user = _user_of(caller)
        namespaces: dict[str, list[Endpoint]] = {}
        for endpoint in endpoints:
            if endpoint.owner is not None:
                namespaces.setdefault(endpoint.owner.namespace, []).append(endpoint)

        async def allowed(namespace: str, name: str) -> bool:
            async with self._listing:
                return await self._allowed(user, namespace, name)

        whole = await asyncio.gather(*(allowed(namespace, "") for namespace in namespaces))
        shown: set[int] = set()
        unasked: list[Endpoint] = []
        for granted, namespace in sorted(zip(whole, namespaces, strict=True),
                                         key=lambda pair: pair[1] != caller.namespace):
            for endpoint in namespaces[namespace]:
                found, ok = (True, True) if granted else self._decisions.cached(
                    (user, namespace, endpoint.owner.name))  # type: ignore[union-attr]
                if ok:
                    shown.add(id(endpoint))
                elif not found:
                    unasked.append(endpoint)
        asked = unasked[:LISTING_NAME_REVIEWS]
        verdicts = await asyncio.gather(*(allowed(e.owner.namespace, e.owner.name)  # type: ignore[union-attr]
                                          for e in asked))
        shown.update(id(e) for e, ok in zip(asked, verdicts, strict=True) if ok)
        return [e for e in endpoints if id(e) in shown]

    async def _allowed(self, user: UserInfo, namespace: str, name: str) -> bool:
        if name:
            # Granted the whole namespace (a listing found out): no review per name.
            found, everything = self._decisions.cached((user, namespace, ""))
            if found and everything:
                return True
        return await self._decisions.get((user, namespace, name),
                                         lambda: self._review_access(user, namespace, name))

    async def _review_access(self, user: UserInfo, namespace: str,
                             name: str) -> tuple[bool, float]:
        # name "": the whole namespace (a listing's first question)
        attributes = ResourceAttributes(namespace=namespace, verb=VERB, group=GROUP,
                                        resource=RESOURCE, name=name)
        spec = SubjectAccessReviewSpec(user=user.username, groups=list(user.groups),
                                       extra={k: list(v) for k, v in user.extra},
                                       uid=user.uid or None, resourceAttributes=attributes)
        status = await self._review(SubjectAccessReview(spec=spec), "access")
        allowed = status.get("allowed") is True and status.get("denied") is not True
        self._metrics.auth_reviews.labels("access", "allowed" if allowed else "denied").inc()
        return allowed, self.cache_seconds

    # -- the API server ----------------------------------------------------------------

    async def _review(self, review: TokenReview | SubjectAccessReview, kind: str,
                      secret: str | None = None) -> dict[str, Any]:
        """A review's ``status`` as JSON; 503 (ESError) when the API server cannot be
        asked. ``secret``: masked in what is logged, should the API server quote it."""
        try:
            async with asyncio.timeout(REVIEW_SECONDS):
                answer = await self._api.create(review)
            problem = None
        except ApiError as error:  # a Status: its code and message, never a body
            code = error.status.code or error.response.status_code
            problem = f"answered {code}: {_masked(error.status.message, secret)}"
        except httpx2.HTTPStatusError as error:  # an answer that is no Status (a proxy's)
            problem = _answered(error)
        except (httpx2.RequestError, TimeoutError, OSError, ConfigError) as error:
            problem = f"is unreachable ({type(error).__name__}: {error})"
        except (ValueError, KeyError) as error:
            # Not JSON, or not a review's. Raised by lightkube too, while it reads an
            # error answer (the HTTP error their context) that claims JSON and is not,
            # or has no Content-Type (KeyError).
            failed = error.__context__
            problem = (_answered(failed) if isinstance(failed, httpx2.HTTPStatusError)
                       else "answered something that is not a review's JSON")
        if problem is not None:
            self._metrics.auth_reviews.labels(kind, "error").inc()
            self._warn(kind, problem)
            raise errors.auth_unavailable()
        return {} if answer.status is None else answer.status.to_dict()

    def _warn(self, kind: str, problem: str) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            review = "TokenReview" if kind == "token" else "SubjectAccessReview"
            log.warning("a %s failed, callers get 503 (the gateway's identity needs create "
                        "on tokenreviews and subjectaccessreviews, e.g. the ClusterRole "
                        "system:auth-delegator): the API server %s", review, problem)


def _user(status: dict[str, Any]) -> UserInfo | None:
    user = status.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("username"), str) \
            or not user["username"]:
        return None
    groups = user.get("groups") or []
    extra = user.get("extra") or {}
    return UserInfo(
        username=user["username"], uid=str(user.get("uid") or ""),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        extra=tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in extra.items()
                           if isinstance(v, list))) if isinstance(extra, dict) else ())


def _is_user(user: UserInfo | None) -> bool:
    return user is not None


def _user_of(caller: Caller) -> UserInfo:
    assert caller.user is not None, "a caller authenticated by a TokenReview"
    return caller.user


def _answered(error: httpx2.HTTPStatusError) -> str:
    return f"answered {error.response.status_code} {error.response.reason_phrase}"


def _masked(message: str | None, secret: str | None) -> str:
    """An API server's Status message, the token masked should it quote it."""
    text = message or ""
    return (text.replace(secret, "<token>") if secret else text)[:300]

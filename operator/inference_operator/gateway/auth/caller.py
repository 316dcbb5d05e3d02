"""Who is calling, and the interface every way of checking callers implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from inference_operator.gateway.endpoints import Endpoint

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# caller_namespace of callers that have none: Kubernetes users that are not ServiceAccounts
# (OIDC, ...), API keys, the admin listener, and everybody with --auth none.
USER_NAMESPACE = "_user"
API_KEY_NAMESPACE = "_api_key"
ADMIN_NAMESPACE = "_admin"
ANONYMOUS_NAMESPACE = "_anonymous"


@dataclass(frozen=True)
class UserInfo:
    """A TokenReview's user, as a SubjectAccessReview asks about it; hashable, so it keys
    the cache of access decisions. Whole, ``extra`` included: Kubernetes puts each token's
    id there (``authentication.kubernetes.io/credential-id``), so two tokens of one
    ServiceAccount do not share decisions; an authorizer may decide on ``extra``, so
    leaving it out of the key could reuse a decision made for another credential."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Caller:
    name: str  # in 403s and the access log: the Kubernetes username, or "api-key:ID"
    namespace: str  # the metrics' caller_namespace: a ServiceAccount's, else one of the above
    account: str = ""  # caller_service_account: the ServiceAccount's name, or the key id
    user: UserInfo | None = None  # --auth kubernetes: whom the SubjectAccessReviews name


def kubernetes_caller(user: UserInfo) -> Caller:
    if user.username.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace, _, account = user.username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        if namespace and account:
            return Caller(user.username, namespace, account, user)
    return Caller(user.username, USER_NAMESPACE, "", user)


ANONYMOUS = Caller("anonymous", ANONYMOUS_NAMESPACE)
ADMIN = Caller("admin", ADMIN_NAMESPACE)


class Access(Protocol):
    """Checks the callers of the public listener (``--auth``). Every refusal is an
    ESError: 401 (no usable credentials), 403 (not allowed), 503 (cannot tell now)."""

    async def authenticate(self, authorization: str | None, path: str) -> Caller:
        """The caller an ``Authorization`` header (None: absent) stands for."""
        ...

    async def authorize(self, caller: Caller, inference_id: str,
                        endpoint: Endpoint | None) -> None:
        """Returns when ``caller`` may invoke ``inference_id`` (``endpoint``: None when it
        does not exist; then the answer must not tell that apart from "not allowed")."""
        ...

    async def visible(self, caller: Caller, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """Those of ``endpoints`` the caller may invoke, in the same order."""
        ...

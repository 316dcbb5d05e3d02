"""Turn one reconcile outcome into kstatus-compatible conditions.

``lastTransitionTime`` changes only when a condition's ``status`` changes, as the
Kubernetes API conventions require; everything else is rewritten on every visit.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from inference_operator.api.models import ConditionType, Reason


class Requeue(Enum):
    """What brings the next visit, besides the periodic resync."""

    ON_EVENT = "on_event"  # a change of the resource or of its Secret
    WITH_BACKOFF = "with_backoff"  # a retry after RETRY_DELAYS (gateway, Models API, a bug)


@dataclass(frozen=True)
class Outcome:
    """What one reconcile found. ``stalled`` means only a human can fix it."""

    ready: bool
    reason: str
    message: str
    stalled: bool = False
    reconciling: bool = False
    requeue: Requeue = Requeue.ON_EVENT

    @classmethod
    def serving(cls, message: str) -> Outcome:
        return cls(True, Reason.SERVING, message)

    @classmethod
    def waiting(cls, reason: str, message: str) -> Outcome:
        """Not ready until something changes by itself (a Secret appears or gets its key);
        that change's own event brings the next visit."""
        return cls(False, reason, message, reconciling=True)

    @classmethod
    def retrying(cls, reason: str, message: str) -> Outcome:
        """Not ready because of trouble that passes (the gateway or the Models API away,
        an API server error): tried again with backoff."""
        return cls(False, reason, message, reconciling=True, requeue=Requeue.WITH_BACKOFF)

    @classmethod
    def needs_human(cls, reason: str, message: str) -> Outcome:
        return cls(False, reason, message, stalled=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_conditions(
    outcome: Outcome, generation: int, previous: Sequence[Mapping[str, Any]] | None,
    spend_limit_reached: bool | None = None,
) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled, always all three, so kstatus never guesses; and
    SpendLimitReached once the gateways have said whether it is (``spend_limit_reached``
    not None)."""
    by_type = {c.get("type"): c for c in previous or ()}
    statuses = {
        ConditionType.READY: outcome.ready,
        ConditionType.RECONCILING: outcome.reconciling,
        ConditionType.STALLED: outcome.stalled,
    }
    now = _now()
    conditions = [_condition(condition_type, value, outcome.reason, outcome.message,
                             generation, by_type.get(condition_type, {}), now)
                  for condition_type, value in statuses.items()]
    if spend_limit_reached is not None:
        condition_type = ConditionType.SPEND_LIMIT_REACHED
        conditions.append(_condition(
            condition_type, spend_limit_reached,
            *(SPEND_LIMIT_WORDS if spend_limit_reached else WITHIN_SPEND_LIMIT_WORDS),
            generation, by_type.get(condition_type, {}), now))
    return conditions


SPEND_LIMIT_WORDS = (
    Reason.SPEND_LIMIT_REACHED,
    "Anthropic refuses this endpoint's requests: the organisation's monthly spend limit is "
    "reached (raise it in the Anthropic Console); callers get 429, not retried")
WITHIN_SPEND_LIMIT_WORDS = (Reason.WITHIN_SPEND_LIMIT,
                            "Anthropic answers this endpoint's requests")


def _condition(condition_type: str, value: bool, reason: str, message: str,
               generation: int, old: Mapping[str, Any], now: str) -> dict[str, Any]:
    status = "True" if value else "False"
    transition = old.get("lastTransitionTime") if old.get("status") == status else None
    return {
        "type": str(condition_type),
        "status": status,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": transition or now,
        "observedGeneration": generation,
    }


def condition(status: Mapping[str, Any] | None, condition_type: str
              ) -> Mapping[str, Any] | None:
    for item in (status or {}).get("conditions") or ():
        if item.get("type") == condition_type:
            return item
    return None


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return condition(status, ConditionType.READY)

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
    outcome: Outcome, generation: int, previous: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled, always all three, so kstatus never guesses."""
    by_type = {c.get("type"): c for c in previous or ()}
    statuses = {
        ConditionType.READY: outcome.ready,
        ConditionType.RECONCILING: outcome.reconciling,
        ConditionType.STALLED: outcome.stalled,
    }
    now = _now()
    conditions = []
    for condition_type, value in statuses.items():
        status = "True" if value else "False"
        old = by_type.get(condition_type, {})
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        conditions.append({
            "type": str(condition_type),
            "status": status,
            "reason": str(outcome.reason),
            "message": outcome.message,
            "lastTransitionTime": transition or now,
            "observedGeneration": generation,
        })
    return conditions


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions") or ():
        if condition.get("type") == ConditionType.READY:
            return condition
    return None

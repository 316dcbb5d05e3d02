"""Rate limits shared by the ready gateways (``--peers-service``): each allows rpm/N of
every endpoint and 1/N of every organisation's limits, where peer admission does not
decide instead."""

from __future__ import annotations

import logging

from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import OrgBudgets
from inference_operator.gateway.ratelimit import Limiter
from inference_operator.gateway.readiness import Readiness

log = logging.getLogger(__name__)


class RateSharing:
    def __init__(self, limiter: Limiter, budgets: OrgBudgets, readiness: Readiness,
                 metrics: GatewayMetrics) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._readiness = readiness
        self._metrics = metrics

    def set_replicas(self, replicas: int) -> None:
        """How many ready gateways share each rate limit. Frozen once draining: this
        replica has left the ready count but still answers for the shutdown delay, and
        with the smaller count every replica would allow more than its share while the
        others re-share."""
        if self._readiness.draining:
            return
        before = self._limiter.replicas
        self._limiter.set_replicas(replicas)
        if self._limiter.replicas != before:
            self._budgets.reshare(self._limiter.replicas)
            log.info("%d ready gateway(s) share each rate limit: this one allows rpm/%d "
                     "and 1/%d of each organisation's limits", self._limiter.replicas,
                     self._limiter.replicas, self._limiter.replicas)
        self._metrics.replicas.set(self._limiter.replicas)

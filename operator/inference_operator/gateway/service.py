"""A gateway's parts, put together once: the endpoint registry, in config mode the shards
that fill it, readiness, rate-limit sharing, request memory, the inference pipeline and,
when on, tracing.
Each part is a module of its own; this holds them and starts and stops what needs it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from inference_operator.anthropic.client import Upstream
from inference_operator.gateway.admission import RateAdmission
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import Ceiling, OrgBudgets
from inference_operator.gateway.peering.routing import RateRouting
from inference_operator.gateway.pipeline import Pipeline
from inference_operator.gateway.rate_sharing import RateSharing
from inference_operator.gateway.ratelimit import Limiter
from inference_operator.gateway.readiness import Readiness
from inference_operator.gateway.registry import Registry
from inference_operator.gateway.request_memory import RequestMemory, default_budget, memory_limit
from inference_operator.gateway.retry import RetryPolicy
from inference_operator.gateway.shards import ShardSet
from inference_operator.gateway.state import StateFile
from inference_operator.gateway.tracing import Tracing


class Gateway:
    def __init__(
        self,
        upstream: Upstream,
        *,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        org_limits: bool = True,
        org_limit_ceilings: Sequence[Ceiling] = (),
        state: StateFile | None = None,
        shards: Sequence[str] = (),
        metrics: GatewayMetrics | None = None,
        request_memory: RequestMemory | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``org_limits``: learn each key's organisation limits and admit within them
        (``org_limit_ceilings``: some declared ahead, never learned higher);
        ``shards``: config mode's configuration shards (none: standalone); ``tracing``:
        none, tracing off."""
        self.upstream = upstream
        self.tracing = tracing
        self.limiter = limiter or Limiter()
        self.metrics = metrics or GatewayMetrics()
        self.request_memory = request_memory or RequestMemory(default_budget(memory_limit()))
        self.metrics.request_memory.set_function(lambda: self.request_memory.held)
        self.metrics.request_memory_limit.set(self.request_memory.budget)
        self.metrics.queue_capacity.set(self.limiter.queue_capacity)
        self.budgets = OrgBudgets(self.limiter.clock, self.limiter.queue_capacity,
                                  learn=org_limits, ceilings=org_limit_ceilings,
                                  tally=self.metrics.count_org)
        self.registry = Registry(upstream, self.limiter, self.budgets, self.metrics, state)
        self.metrics.watch_org_limits(lambda: (
            (e.inference_id, e.budget.utilisation(), e.budget.spend_limit_reached)
            for e in self.registry.select(None, None)))
        self.readiness = Readiness(self.metrics.ready, shards)
        self.shards = ShardSet(shards, self.registry, self.readiness, self.metrics)
        self.sharing = RateSharing(self.limiter, self.budgets, self.readiness, self.metrics)
        self.routing = RateRouting(self.limiter, self.budgets, self.metrics)
        self.pipeline = Pipeline(RateAdmission(self.metrics, self.limiter.clock, self.routing),
                                 retry or RetryPolicy(), self.metrics, self.limiter.clock)

    async def start(self) -> None:
        await self.upstream.start()
        self.registry.load_state()

    async def close(self) -> None:
        await self.upstream.close()
        if self.tracing is not None:  # what is queued is exported, off the event loop
            await asyncio.to_thread(self.tracing.shutdown)

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = {"status": "ok", "endpoints": len(self.registry),
                                  "replicas": self.limiter.replicas}
        if self.routing.member is not None:
            health["peer"] = self.routing.member
        if self.shards.names:
            health["config"] = self.shards.generations()
        return health

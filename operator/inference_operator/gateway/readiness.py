"""Whether this gateway should be sent requests (``/readyz``): at once standalone (its
state file is loaded before it listens), once every configuration shard was loaded in
config mode, and never again once it is shutting down (draining)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Gauge


class Readiness:
    def __init__(self, gauge: Gauge, shards: Sequence[str] = ()) -> None:
        """``shards``: the configuration shards to wait for (none: standalone)."""
        self._gauge = gauge
        self._waiting = list(shards)
        self.draining = False  # shutting down: connections are closed after their answers
        self._gauge.set(int(self.ready))

    @property
    def ready(self) -> bool:
        return not self.draining and not self._waiting

    def loaded(self, shard: str) -> None:
        if shard in self._waiting:
            self._waiting.remove(shard)
            self._gauge.set(int(self.ready))

    def begin_draining(self) -> None:
        self.draining = True
        self._gauge.set(0)

    def reason(self) -> str | None:
        """Why ``/readyz`` is 503; None when ready."""
        if self.draining:
            return "shutting down"
        if self._waiting:
            return f"waiting for the configuration shard(s) {', '.join(self._waiting)}"
        return None

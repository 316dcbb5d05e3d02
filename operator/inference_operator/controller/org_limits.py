"""What the gateways learned of each endpoint's organisation limits, for its status: the
limits of its key and model class, how much of them is in use, and whether Anthropic
refuses it for the spend limit. Read from every ready replica's metrics listener (the
gateway's ``inference_gateway_org_*`` series, parsed with prometheus_client's parser)
every ``org_limits_poll_seconds``: the gateways hold no credential that could write a
status, and the operator already reaches them."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from inference_operator.controller.fleet import Addresses
from inference_operator.gateway.metrics import ORG_LIMIT_PER_MINUTE, ORG_LIMIT_USED, ORG_SPEND_LIMIT

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT = 5.0
# A gateway's metrics grow with its endpoints; more than this is not one of ours.
MAX_SCRAPE_BYTES = 64 * 1024 * 1024
# The status shows the share in use in steps of this many percent, so that a busy
# endpoint's status is not patched at every read.
USED_STEP = 10
_WANTED = (b"inference_gateway_org_", b"# TYPE inference_gateway_org_")
_FIELDS = {"requests": "requests_per_minute", "input-tokens": "input_tokens_per_minute",
           "output-tokens": "output_tokens_per_minute"}


@dataclass(frozen=True)
class OrgReport:
    """One endpoint's organisation limits across the ready replicas."""

    per_minute: Mapping[str, int] = field(default_factory=dict)  # limit -> per minute
    used_percent: int = 0
    spend_limit_reached: bool = False

    def status(self, model_class: str) -> dict[str, object]:
        """The status' ``organisation_limits``."""
        return {"model_class": model_class, "used_percent": self.used_percent,
                **{_FIELDS[name]: value for name, value in sorted(self.per_minute.items())
                   if name in _FIELDS}}


@dataclass
class _Replica:
    """One replica's series for one endpoint."""

    per_minute: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    spend_limit_reached: bool = False


def parse(text: str) -> dict[str, _Replica]:
    """One replica's metrics (as _scrape keeps them: the organisation's lines): per
    inference id, its organisation series."""
    replicas: dict[str, _Replica] = defaultdict(_Replica)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            inference_id = sample.labels.get("inference_id")
            if not inference_id:
                continue
            if sample.name == ORG_LIMIT_PER_MINUTE:
                replicas[inference_id].per_minute[sample.labels.get("limit", "")] = sample.value
            elif sample.name == ORG_LIMIT_USED:
                replicas[inference_id].used[sample.labels.get("limit", "")] = sample.value
            elif sample.name == ORG_SPEND_LIMIT and sample.value >= 1:
                replicas[inference_id].spend_limit_reached = True
    return replicas


def combine(replicas: Iterable[Mapping[str, _Replica]]) -> dict[str, OrgReport]:
    """The fleet's view of each endpoint: each limit as the replicas learned it (the
    highest, should one lag behind a change), the share in use of the busiest replica's
    most used limit, in USED_STEP steps (with peer admission the budget's owner holds
    nearly all of it and the others next to nothing; without, each its 1/N: either way the
    busiest is the one nearest to making callers wait), and the spend limit reached where
    any replica met it."""
    seen: dict[str, list[_Replica]] = defaultdict(list)
    for replica in replicas:
        for inference_id, series in replica.items():
            seen[inference_id].append(series)
    reports = {}
    for inference_id, views in seen.items():
        per_minute: dict[str, int] = {}
        busiest = 0.0
        for view in views:
            for name, value in view.per_minute.items():
                if value >= 1:
                    per_minute[name] = max(per_minute.get(name, 0), int(value))
            busiest = max([busiest, *(min(1.0, max(0.0, v)) for v in view.used.values())])
        reports[inference_id] = OrgReport(
            per_minute, int(busiest * 100) // USED_STEP * USED_STEP,
            any(view.spend_limit_reached for view in views))
    return reports


class OrgLimitsReader:
    def __init__(self, addresses: Addresses) -> None:
        self._addresses = addresses
        self._reports: dict[str, OrgReport] = {}
        self._session: aiohttp.ClientSession | None = None

    def report(self, inference_id: str) -> OrgReport | None:
        return self._reports.get(inference_id)

    async def refresh(self) -> set[str]:
        """Read every ready replica once; the inference ids whose report changed. No
        replica answering keeps what was known (a metrics listener away is no news)."""
        try:
            addresses = await self._addresses()
        except Exception as error:  # the API server away: keep what we knew
            log.warning("gateway metrics listeners not listed: %s", error)
            return set()
        pages = [page for page in await asyncio.gather(*map(self._scrape, addresses))
                 if page is not None]
        if not pages:
            return set()
        reports = combine(await asyncio.to_thread(lambda: [parse(page) for page in pages]))
        changed = {inference_id for inference_id in reports.keys() | self._reports.keys()
                   if reports.get(inference_id) != self._reports.get(inference_id)}
        self._reports = reports
        return changed

    async def _scrape(self, address: str) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))
        try:
            async with self._session.get(f"{address}/metrics") as response:
                if response.status != 200:
                    log.debug("gateway metrics at %s answered %d", address, response.status)
                    return None
                # Only the organisation's lines are kept as the page is read: the rest
                # (every other series of every endpoint) is most of it.
                kept: list[bytes] = []
                carry, read = b"", 0
                async for chunk in response.content.iter_chunked(1 << 20):
                    read += len(chunk)
                    if read > MAX_SCRAPE_BYTES:
                        log.warning("gateway metrics at %s are over %d bytes: not read",
                                    address, MAX_SCRAPE_BYTES)
                        return None
                    lines = (carry + chunk).split(b"\n")
                    carry = lines.pop()
                    kept.extend(line for line in lines if line.startswith(_WANTED))
        except (aiohttp.ClientError, TimeoutError) as error:
            log.debug("gateway metrics at %s not read: %s", address, error)
            return None
        if carry.startswith(_WANTED):
            kept.append(carry)
        return b"\n".join(kept).decode("utf-8", "replace")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

"""The operator's reading of the gateways' organisation limits (controller/org_limits.py)
and the SpendLimitReached condition it writes (controller/conditions.py): several replicas'
metrics pages combined into one figure per endpoint, as its status shows it."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from inference_operator.controller import org_limits
from inference_operator.controller.conditions import Outcome, build_conditions
from inference_operator.controller.fleet import static_addresses
from inference_operator.controller.org_limits import OrgLimitsReader, OrgReport, combine, parse
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.org_limits import INPUT, OUTPUT, REQUESTS


def page(*endpoints: tuple[str, dict[str, tuple[int, float]], bool]) -> str:
    """A gateway's whole metrics page, made by the gateway's own exporter."""
    metrics = GatewayMetrics()
    metrics.watch_org_limits(lambda: endpoints)
    metrics.tokens.labels("a", "input").inc()  # series of other families are skipped
    return generate_latest(metrics.registry).decode()


FULL = {REQUESTS: (50, 0.1), INPUT: (30_000, 0.25), OUTPUT: (8_000, 0.5)}


@pytest.mark.parametrize(("pages", "expected"), [
    pytest.param([page(("a", FULL, False))],
                 {"a": OrgReport({REQUESTS: 50, INPUT: 30_000, OUTPUT: 8_000}, 50, False)},
                 id="one replica: the most used limit, in steps of 10"),
    pytest.param([page(("a", {OUTPUT: (8_000, 0.58)}, False)),
                  page(("a", {OUTPUT: (8_000, 0.2)}, False))],
                 {"a": OrgReport({OUTPUT: 8_000}, 50, False)},
                 id="the busiest replica's share in use"),
    pytest.param([page(("a", {OUTPUT: (8_000, 0.0)}, False)),
                  page(("a", {OUTPUT: (10_000, 0.0)}, True))],
                 {"a": OrgReport({OUTPUT: 10_000}, 0, True)},
                 id="a changed limit and the spend limit, as any replica saw them"),
    pytest.param([page(("a", {}, True))], {"a": OrgReport({}, 0, True)},
                 id="refused for the spend limit before any limit was learned"),
    pytest.param([page(("a", {OUTPUT: (8_000, 1.7)}, False), ("b", {}, False))],
                 {"a": OrgReport({OUTPUT: 8_000}, 100, False)},
                 id="at most 100 %; an endpoint with nothing learned is not reported"),
    pytest.param([page()], {}, id="nothing learned yet"),
])
def test_replicas_combine_into_one_report_per_endpoint(pages: list[str],
                                                       expected: dict[str, OrgReport]) -> None:
    assert combine(parse(text) for text in pages) == expected


def test_the_status_names_the_limits_as_the_api_does() -> None:
    report = OrgReport({REQUESTS: 50, OUTPUT: 8_000}, 40, False)
    assert report.status("sonnet-4") == {
        "model_class": "sonnet-4", "used_percent": 40, "requests_per_minute": 50,
        "output_tokens_per_minute": 8_000}


def test_spend_limit_condition_keeps_its_transition_time_while_unchanged() -> None:
    serving = Outcome.serving("served")
    assert [c["type"] for c in build_conditions(serving, 1, None)] == [
        "Ready", "Reconciling", "Stalled"]  # nothing heard from the gateways yet
    reached = build_conditions(serving, 1, None, spend_limit_reached=True)
    spend = reached[-1]
    assert (spend["type"], spend["status"], spend["reason"]) == (
        "SpendLimitReached", "True", "SpendLimitReached")
    assert "spend limit" in spend["message"]
    still = build_conditions(serving, 1, [{**spend, "lastTransitionTime": "then"}], True)
    assert still[-1]["lastTransitionTime"] == "then"
    cleared = build_conditions(serving, 1, [{**spend, "lastTransitionTime": "then"}], False)
    assert (cleared[-1]["status"], cleared[-1]["reason"]) == ("False", "WithinSpendLimit")
    assert cleared[-1]["lastTransitionTime"] != "then"
    assert reached[0]["status"] == "True"  # the endpoint itself is served all along


@pytest.mark.parametrize("piece", [1, 7, 4096])
async def test_the_reader_keeps_the_organisation_lines_whatever_the_chunks(
        piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real scrape over loopback, the page written in pieces of ``piece`` bytes (lines cut
    anywhere); a page over the size bound is not read at all."""
    text = page(("a", FULL, True)).encode()

    async def metrics(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(text), piece):
            await response.write(text[start:start + piece])
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with TestServer(app, host="127.0.0.1") as server:
        reader = OrgLimitsReader(static_addresses((str(server.make_url("")).rstrip("/"),)))
        try:
            assert await reader.refresh() == {"a"}
            assert reader.report("a") == OrgReport(
                {REQUESTS: 50, INPUT: 30_000, OUTPUT: 8_000}, 50, True)
            monkeypatch.setattr(org_limits, "MAX_SCRAPE_BYTES", len(text) - 1)
            assert await reader.refresh() == set()  # no replica read: what was known stays
            assert reader.report("a") is not None
        finally:
            await reader.close()

"""The operator's spans over fakes, with the SDK's in-memory exporter: a reconcile is one
span, from the handler's call to the status patch, with a span under it for each step
that waits on something else, so a slow Ready shows where its time went."""

from __future__ import annotations

import asyncio

from controller_fakes import KEY, NAMESPACE, FakeVerifier, World, endpoint, secret_value
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from inference_operator.controller import tracing as spans
from inference_operator.controller.tracing import ReconcileTracing


def _world(verifier: FakeVerifier | None = None) -> tuple[World, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return World(verifier=verifier, tracing=ReconcileTracing(provider)), exporter


def _children(spans_: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    return [s.name for s in sorted(spans_, key=lambda s: s.start_time or 0)
            if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_reconcile_to_ready_is_one_span_with_its_steps_under_it() -> None:
    world, exporter = _world(FakeVerifier(delay=0.05))
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()

    await world.apply(endpoint(generation=3))

    finished = list(exporter.get_finished_spans())
    (reconcile,) = [s for s in finished if s.name == spans.RECONCILE]
    assert reconcile.parent is None
    assert dict(reconcile.attributes or {}) | {spans.QUEUE_WAIT: 0} == {
        spans.NAMESPACE: NAMESPACE, spans.NAME: "ep", spans.GENERATION: 3,
        spans.REASON: "Serving", spans.READY: True, spans.QUEUE_WAIT: 0}
    assert _children(finished, reconcile) == [spans.VERIFY, spans.PUBLISH, spans.GATEWAYS,
                                              spans.STATUS]
    (verify,) = [s for s in finished if s.name == spans.VERIFY]
    assert (verify.end_time or 0) - (verify.start_time or 0) >= 0.04e9  # Anthropic's time
    assert KEY not in "".join(s.to_json() for s in finished)


async def test_a_key_anthropic_refuses_ends_in_its_reason_and_withdraws() -> None:
    from inference_operator.api.models import Reason
    from inference_operator.controller.conditions import Outcome

    world, exporter = _world(FakeVerifier(answer=Outcome.needs_human(
        Reason.UPSTREAM_AUTH_FAILED, "Anthropic rejected the key")))
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()

    await world.apply(endpoint())

    (reconcile,) = [s for s in exporter.get_finished_spans() if s.name == spans.RECONCILE]
    assert (reconcile.attributes or {})[spans.REASON] == "UpstreamAuthFailed"
    assert (reconcile.attributes or {})[spans.READY] is False
    # Not a failure of the operator's: the reconcile did its job.
    assert reconcile.status.status_code == StatusCode.UNSET


async def test_an_unexpected_error_marks_the_reconcile_failed() -> None:
    world, exporter = _world()
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    world.kube.fail_reads = RuntimeError("boom")

    await world.apply(endpoint())
    await asyncio.sleep(0)

    failed = [s for s in exporter.get_finished_spans() if s.name == spans.RECONCILE]
    assert failed and failed[0].status.status_code == StatusCode.ERROR
    assert (failed[0].attributes or {})[spans.ERROR_TYPE] == "ReconcileFailed"


async def test_without_tracing_the_controller_makes_no_spans() -> None:
    world = World()
    world.kube.secrets[(NAMESPACE, "creds")] = secret_value()
    await world.apply(endpoint())
    assert world.controller.tracing is None
    assert world.ready()["reason"] == "Serving"

"""The chart's tracing values as rendered: the OpenTelemetry SDK's own variables on the
gateway and operator containers, read by the product's own check (telemetry.py), the
collector's port opened by the NetworkPolicy, and nothing of it by default."""

from __future__ import annotations

import pytest
from test_install_fleet import SIDECAR, args_of, objects, render

from inference_devkit.chart import helm_template
from inference_operator import telemetry

ENDPOINT = "--set=tracing.endpoint=http://otel-collector.observability:4318"


def container_env(rendered: list[dict], name: str = "gateway") -> dict[str, str]:
    for deployment in objects(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["name"] == name:
                # Not the downward API's (the gateways' POD_IP for peer admission).
                return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    raise AssertionError(f"no {name} container")


def egress_ports(policy: dict) -> set[int]:
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_tracing_is_off_by_default() -> None:
    rendered = render("--set=networkPolicy.enabled=true")
    assert not telemetry.tracing_enabled(container_env(rendered))
    assert not telemetry.tracing_enabled(container_env(rendered, "operator"))
    assert "--trace-upstream" not in args_of(rendered, "gateway")
    assert all(4318 not in egress_ports(p) for p in objects(rendered, "NetworkPolicy").values())


@pytest.mark.parametrize("mode", [[], [SIDECAR]], ids=["fleet", "sidecar"])
def test_an_endpoint_turns_tracing_on_with_the_sdks_variables(mode: list[str]) -> None:
    rendered = render(*mode, ENDPOINT, "--set=tracing.sampler=parentbased_traceidratio",
                      "--set-string=tracing.samplerArg=0.1",
                      "--set=tracing.resourceAttributes=deployment.environment.name=prod",
                      "--set=networkPolicy.enabled=true")
    env = container_env(rendered)
    assert telemetry.tracing_enabled(env) and telemetry.config_problem(env) is None
    assert container_env(rendered, "operator") == {
        **env, "OTEL_SERVICE_NAME": "inference-operator"}
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "inference-gateway",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod",
    }
    # Anthropic sees no trace context unless asked.
    assert "--trace-upstream" not in args_of(rendered, "gateway")
    policies = objects(rendered, "NetworkPolicy").values()
    assert any(4318 in egress_ports(policy) for policy in policies)


def test_content_is_recorded_only_when_asked() -> None:
    assert not telemetry.capture_content(container_env(render(ENDPOINT)))
    env = container_env(render(ENDPOINT, "--set=tracing.captureContent=true"))
    assert telemetry.capture_content(env) and telemetry.config_problem(env) is None


def test_propagation_upstream_is_its_own_choice() -> None:
    assert "--trace-upstream" in args_of(
        render(ENDPOINT, "--set=tracing.propagateUpstream=true"), "gateway")
    # Without an endpoint tracing is off: the flag would say nothing.
    assert "--trace-upstream" not in args_of(
        render("--set=tracing.propagateUpstream=true"), "gateway")


@pytest.mark.parametrize(("endpoint", "port"), [
    ("https://otel.example.com", 443), ("http://otel.example.com", 80),
    ("https://otel.example.com:4443/prefix", 4443),
])
def test_the_collectors_port_is_opened_whatever_the_endpoint_says(endpoint: str,
                                                                    port: int) -> None:
    rendered = render(f"--set=tracing.endpoint={endpoint}", "--set=networkPolicy.enabled=true")
    (gateways,) = [p for name, p in objects(rendered, "NetworkPolicy").items()
                   if name.endswith("-gateway")]
    assert port in egress_ports(gateways)


@pytest.mark.parametrize("values", [
    "--set=tracing.endpoint=otel-collector:4318",  # no scheme
    "--set=tracing.sampler=sometimes",
])
def test_a_bad_tracing_value_fails_with_a_schema_error(values: str) -> None:
    result = helm_template(values, check=False)
    assert result.returncode != 0 and "tracing" in result.stderr, result.stderr

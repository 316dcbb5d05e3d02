"""The public document declares its listener's caller access (``--auth``): the scheme,
where it applies, and the refusals it brings. docs/openapi.json is the admin document, so
the public documents of each mode are checked here (and fuzzed with api-keys in
test_gateway_fuzz.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from gateway_support import GatewayFactory
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from inference_operator.anthropic.client import Upstream
from inference_operator.gateway import auth as modes
from inference_operator.gateway import errors, http, openapi
from inference_operator.gateway.auth.apikeys import hash_key
from inference_operator.gateway.auth.budget import ReviewBudget
from inference_operator.gateway.auth.kubernetes import KubernetesAccess
from inference_operator.gateway.metrics import GatewayMetrics
from inference_operator.gateway.service import Gateway

PROBES = ("/healthz", "/readyz", "/metrics")
ERROR = {"$ref": "#/components/schemas/Error"}


def operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, op) for path, item in doc["paths"].items() for op in item.values()]


@pytest.mark.parametrize(("mode", "name", "statuses"), [
    (modes.KUBERNETES, "bearerAuth", {"401", "503"}),
    (modes.API_KEYS, "apiKeyAuth", {"401"}),
])
def test_the_public_document_declares_the_callers_scheme(
        mode: str, name: str, statuses: set[str]) -> None:
    doc = openapi.document(admin=False, auth=mode)
    schemathesis.openapi.from_dict(doc).validate()  # OpenAPI 3.1's meta-schema
    assert list(doc["components"]["securitySchemes"]) == [name]
    challenge = errors.BEARER_CHALLENGE if mode == modes.KUBERNETES else errors.API_KEY_CHALLENGE
    for path, operation in operations(doc):
        if path in PROBES:
            assert "security" not in operation and "401" not in operation["responses"]
            continue
        assert operation["security"] == [{name: []}], path
        names_id = "{inference_id}" in path
        wanted = statuses | ({"403"} if names_id else set())
        assert wanted <= set(operation["responses"]), path
        # A listing leaves out what it may not show; only a named id is refused.
        assert ("403" in operation["responses"]) == names_id, path
        for status in wanted:
            assert operation["responses"][status]["content"]["application/json"]["schema"] \
                == ERROR
        assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["schema"][
            "const"] == challenge


def test_the_schemes_say_what_to_send() -> None:
    bearer = openapi.document(admin=False, auth=modes.KUBERNETES, audience="aud-x")[
        "components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert "ServiceAccount token" in bearer["description"]
    assert "`aud-x`" in bearer["description"] and "`invoke`" in bearer["description"]
    key = openapi.document(admin=False, auth=modes.API_KEYS)[
        "components"]["securitySchemes"]["apiKeyAuth"]
    assert (key["type"], key["in"], key["name"]) == ("apiKey", "header", "Authorization")
    assert "ApiKey base64(id:api_key)" in key["description"]


def test_none_and_the_admin_listener_are_as_before() -> None:
    public = openapi.document(admin=False, auth=modes.NONE)
    assert public == openapi.document(admin=False)
    assert "securitySchemes" not in public["components"]
    assert not any("security" in op or "401" in op["responses"] for _, op in operations(public))
    admin = openapi.document(admin=True)
    assert list(admin["components"]["securitySchemes"]) == ["adminToken"]
    for mode in modes.MODES:
        assert openapi.document(admin=True, auth=mode) == admin


async def test_a_kubernetes_gateway_serves_the_kubernetes_document() -> None:
    # What build_app renders for the checks server.py builds (no API server is asked).
    api = AsyncClient(KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"),
                                          user=User()))
    try:
        access = KubernetesAccess(api, GatewayMetrics(), audience="aud-y", cache_seconds=1,
                                  cache_size=10, negative_cache_size=10,
                                  reviews=ReviewBudget(1, 1.0))
        app = http.build_app(Gateway(Upstream("http://127.0.0.1:9")), access=access)
    finally:
        await api.close()
    assert json.loads(app[http.OPENAPI]) == openapi.document(
        admin=False, auth=modes.KUBERNETES, audience="aud-y")


async def test_an_api_keys_gateway_serves_the_api_keys_document(
        make_gateway: GatewayFactory, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"api_keys": [
        {"id": "docs", "key_hash": hash_key("key-docs-0f1e2d3c4b5a6978"),
         "inference_ids": ["*"]}]}))
    gateway = await make_gateway(auth=modes.API_KEYS, api_keys_file=keys)
    url = gateway.public + "/_inference/_openapi"
    async with gateway.session.get(url) as refused:
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == errors.API_KEY_CHALLENGE
    header = "ApiKey " + base64.b64encode(b"docs:key-docs-0f1e2d3c4b5a6978").decode()
    async with gateway.session.get(url, headers={"Authorization": header}) as served:
        assert served.status == 200
        assert await served.json() == openapi.document(admin=False, auth=modes.API_KEYS)

"""The gateway's OpenAPI 3.1 document, built from the same pydantic models the gateway
validates with, so it cannot describe other rules than the ones enforced.

Served at ``GET /_inference/_openapi`` on both listeners (the admin listener's document
adds the write operations and the bearer scheme; the public one declares the callers'
scheme of its ``--auth`` mode) and shipped as ``docs/openapi.json`` (the admin document);
``tests/gateway/test_gateway_fuzz.py`` fails when the file drifts from :func:`document`
and fuzzes both listeners against it with schemathesis.

Where the gateway checks more than the models say (the ``service`` name, task types,
exactly one input, ids, time values), the extra rule is written here next to its source."""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from inference_operator import __version__ as _package_version
from inference_operator.api.elasticsearch_body import (
    InferenceRequestBody,
    PutInferenceBody,
    UpdateInferenceBody,
)
from inference_operator.api.settings import (
    INFERENCE_ID_MAX_LENGTH,
    INFERENCE_ID_PATTERN,
    Service,
    TaskType,
)
from inference_operator.gateway import auth as modes
from inference_operator.gateway import errors
from inference_operator.gateway.chat import schemas as chat_schemas
from inference_operator.gateway.validation import ES_TASK_TYPES

_REF = "#/components/schemas/{model}"
# timeunits.py: optional blanks, then -1, 0 or digits with a unit, any letter case
# (Elasticsearch lower-cases the value too). Empty means the default (30s).
TIME_VALUE_PATTERN = (r"^([ \t]*(-1|0|[0-9]+([nN][aA][nN][oO][sS]|[mM][iI][cC][rR][oO][sS]"
                      r"|[mM][sS]|[sSmMhHdD]))[ \t]*)?$")
_PRODUCT_HEADER = {"X-Elastic-Product": {
    "description": "Always `Elasticsearch`: the official clients refuse answers without it.",
    "required": True, "schema": {"type": "string", "enum": ["Elasticsearch"]}}}

_ERROR = {
    "type": "object",
    "description": "Elasticsearch's error shape.",
    "required": ["error", "status"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["root_cause", "type", "reason"],
            "properties": {
                "root_cause": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "reason"],
                    "properties": {"type": {"type": "string"}, "reason": {"type": "string"}}}},
                "type": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
}
# What GET answers show of an endpoint: additionalProperties false on service_settings,
# so a key showing up there fails schema conformance in the fuzz tests.
_ENDPOINT = {
    "type": "object",
    "required": ["inference_id", "task_type", "service", "service_settings", "task_settings"],
    "properties": {
        "inference_id": {"type": "string"},
        "task_type": {"type": "string"},
        "service": {"type": "string", "enum": [Service.ANTHROPIC.value]},
        "service_settings": {
            "type": "object", "additionalProperties": False, "required": ["model_id"],
            "properties": {
                "model_id": {"type": "string"},
                "rate_limit": {"type": "object", "additionalProperties": False, "properties": {
                    "requests_per_minute": {"type": "integer"}}},
            },
        },
        "task_settings": {"type": "object"},
    },
}
_OTHER_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "Endpoint": _ENDPOINT,
    "Endpoints": {"type": "object", "required": ["endpoints"], "properties": {
        "endpoints": {"type": "array", "items": {"$ref": _REF.format(model="Endpoint")}}}},
    "Completion": {"type": "object", "required": ["completion"], "properties": {
        "completion": {"type": "array", "items": {
            "type": "object", "required": ["result"],
            "properties": {"result": {"type": ["string", "null"]}}}}}},
    **chat_schemas.SCHEMAS,
    "Deleted": {"type": "object", "required": ["acknowledged", "pipelines", "indexes"],
                "properties": {"acknowledged": {"type": "boolean"},
                               "pipelines": {"type": "array"}, "indexes": {"type": "array"}}},
    # config: in config mode only, each shard's generation being served (null: not
    # loaded yet), which the operator compares with the generations it wrote.
    "Health": {"type": "object", "required": ["status", "endpoints", "replicas"],
               "properties": {"status": {"type": "string"},
                              "endpoints": {"type": "integer", "minimum": 0},
                              "replicas": {"type": "integer", "minimum": 1},
                              "config": {"type": "object", "additionalProperties": {
                                  "type": ["integer", "null"]}}}},
    "Ready": {"type": "object", "required": ["ready"],
              "properties": {"ready": {"type": "boolean"}, "reason": {"type": "string"}}},
}


def _model_schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(PutInferenceBody, "validation"), (UpdateInferenceBody, "validation"),
         (InferenceRequestBody, "validation")], ref_template=_REF)
    schemas: dict[str, Any] = copy.deepcopy(top["$defs"])
    # Rules the gateway adds to the models (validation.py).
    schemas["PutInferenceBody"]["properties"]["service"]["enum"] = [Service.ANTHROPIC.value]
    schemas["PutInferenceBody"]["properties"]["task_type"]["anyOf"][0]["enum"] = [
        t.value for t in TaskType]
    # "Anthropic chat completions only accepts 1 input".
    schemas["InferenceRequestBody"]["properties"]["input"]["anyOf"][1].update(
        {"minItems": 1, "maxItems": 1})
    return schemas


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema}


_INFERENCE_ID = {**_param("inference_id", "path", {
    "type": "string", "pattern": INFERENCE_ID_PATTERN, "maxLength": INFERENCE_ID_MAX_LENGTH},
    "Lowercase letters, digits, `_`, `-`, `.`; starts and ends with a letter or digit."),
    "example": "anthropic_completion"}
_CHAT_ID = {**_INFERENCE_ID, "example": "anthropic_chat"}
# GET also takes the wildcards (they list every endpoint).
_READ_ID = _param("inference_id", "path", {"anyOf": [
    {"type": "string", "pattern": INFERENCE_ID_PATTERN, "maxLength": INFERENCE_ID_MAX_LENGTH},
    {"type": "string", "enum": ["_all", "*"]}]}, "An id, or `_all`/`*` for every endpoint.")
_TASK_TYPE = _param("task_type", "path", {"type": "string", "enum": sorted(ES_TASK_TYPES)},
                    "Elasticsearch's task types; this service serves `completion`.")
# chat_completion has paths of its own (its body and answers differ).
_INFER_TASK_TYPE = _param(
    "task_type", "path",
    {"type": "string", "enum": sorted(ES_TASK_TYPES - {TaskType.CHAT_COMPLETION.value})},
    "Elasticsearch's task types; `completion` is served here, `chat_completion` has its own "
    "paths.")
_TIMEOUT = _param("timeout", "query", {"type": "string", "pattern": TIME_VALUE_PATTERN},
                  "Elasticsearch time value (`30s`, `500ms`, `2m`, `-1` for none); covers "
                  "queueing and the upstream call. Default `30s`; on expiry 408.")


def _flag(name: str, description: str) -> dict[str, Any]:
    return _param(name, "query", {"type": "string", "enum": ["", "true", "false"]}, description)


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}}


def _answer(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": _PRODUCT_HEADER, "content": content}


_ERRORS = {"default": _answer("An error, in Elasticsearch's shape.", _json("Error"))}
# The chat action's errors are OpenAI-shaped; the REST layer's before it (an unknown
# parameter) and refusals of access keep Elasticsearch's, as in Elasticsearch.
_CHAT_ERROR = {"application/json": {"schema": {"anyOf": [
    {"$ref": _REF.format(model="ChatError")}, {"$ref": _REF.format(model="Error")}]}}}
_CHAT_ERRORS = {"default": _answer("An error: OpenAI's shape from the chat action, "
                                   "Elasticsearch's from the REST layer.", _CHAT_ERROR)}
# One event of the stream (how SSE-aware tools, schemathesis among them, read the schema):
# ``data`` is a JSON completion delta, ``[DONE]``, or an Error for ``event: error``.
_SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"event": {"type": "string", "enum": ["message", "error"]},
                   "data": {"type": "string"}}}}}


def _operation(operation_id: str, summary: str, responses: dict[str, Any], *,
               parameters: list[dict[str, Any]] | None = None,
               body: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "parameters": parameters or [], "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    return operation


def _inference_paths(admin: bool) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    listed = {"200": _answer("Endpoints sorted by id, never a key.", _json("Endpoints")),
              **_ERRORS}
    for suffix, params in (("", []), ("/_all", []), ("/{task_type}/_all", [_TASK_TYPE])):
        name = suffix.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "root"
        paths["/_inference" + suffix] = {"get": _operation(
            f"list_{name}", "List endpoints", listed, parameters=params)}
    for prefix, params in (("", []), ("/{task_type}", [_TASK_TYPE])):
        tag = "typed_" if params else ""
        infer_params = [_INFER_TASK_TYPE] if params else []
        one = {"get": _operation(f"{tag}get", "Get an endpoint", listed,
                                 parameters=[*params, _READ_ID])}
        one["post"] = _operation(
            f"{tag}infer", "Completion", {
                "200": _answer("The completion.", _json("Completion")), **_ERRORS},
            parameters=[*infer_params, _INFERENCE_ID, _TIMEOUT], body="InferenceRequestBody")
        stream = {"post": _operation(
            f"{tag}stream", "Streamed completion (SSE)", {
                "200": _answer("`event: message` per delta, then `data: [DONE]`, or an "
                               "`event: error`.", _SSE),
                "default": _answer("An error: JSON for a bad request, else one "
                                   "`event: error`.", {**_json("Error"), **_SSE})},
            parameters=[*infer_params, _INFERENCE_ID, _TIMEOUT], body="InferenceRequestBody")}
        if admin:
            one["put"] = _operation(
                f"{tag}create", "Create an endpoint (the key is never echoed)", {
                    "200": _answer("The stored config, without the key.", _json("Endpoint")),
                    **_ERRORS},
                parameters=[*params, _INFERENCE_ID], body="PutInferenceBody")
            one["delete"] = _operation(
                f"{tag}delete", "Delete an endpoint", {
                    "200": _answer("Deleted.", _json("Deleted")), **_ERRORS},
                parameters=[*params, _INFERENCE_ID,
                            _flag("dry_run", "Change nothing.")])
            update = _operation(
                f"{tag}update", "Update the key and/or task settings", {
                    "200": _answer("The stored config, without the key.", _json("Endpoint")),
                    **_ERRORS},
                parameters=[*params, _INFERENCE_ID], body="UpdateInferenceBody")
            paths[f"/_inference{prefix}/{{inference_id}}/_update"] = {
                "put": update, "post": {**update, "operationId": f"{tag}update_post"}}
        paths[f"/_inference{prefix}/{{inference_id}}"] = one
        paths[f"/_inference{prefix}/{{inference_id}}/_stream"] = stream
    chat = "/_inference/chat_completion/{inference_id}"
    # The path's other methods are the typed path's, with the task type fixed.
    paths[chat] = {method: {**copy.deepcopy(operation), "operationId":
                            f"chat_{operation['operationId']}", "parameters": [
                                p for p in operation["parameters"] if p["name"] != "task_type"]}
                   for method, operation in paths["/_inference/{task_type}/{inference_id}"].items()
                   if method != "post"}
    paths[chat]["post"] = _operation(
        "chat", "Chat completion", {
            "200": _answer("The chat completion (OpenAI's `chat.completion`).",
                           _json("ChatCompletion")), **_CHAT_ERRORS},
        parameters=[_CHAT_ID, _TIMEOUT], body="ChatCompletionRequest")
    paths[chat + "/_stream"] = {"post": _operation(
        "chat_stream", "Streamed chat completion (SSE)", {
            "200": _answer("`event: message` per `chat.completion.chunk`, then "
                           "`data: [DONE]`, or an `event: error`.", _SSE),
            "default": _answer("An error: JSON for a bad request, else one `event: error`.",
                               {**_CHAT_ERROR, **_SSE})},
        parameters=[_CHAT_ID, _TIMEOUT], body="ChatCompletionRequest")}
    paths["/_inference/_openapi"] = {"get": _operation(
        "openapi", "This document", {
            "200": _answer("OpenAPI 3.1.", {"application/json": {"schema": {"type": "object"}}}),
            **_ERRORS})}
    return paths


def _probe_paths(*, metrics: bool) -> dict[str, dict[str, Any]]:
    """``metrics``: whether the listener serves /metrics (http._probes)."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths = {
        "/healthz": {"get": _operation("healthz", "Liveness", {
            "200": _answer("Alive.", _json("Health")), **_ERRORS})},
        "/readyz": {"get": _operation("readyz", "Readiness (config mode: every shard loaded)", {
            "200": _answer("Ready.", _json("Ready")),
            "503": _answer("Not ready yet.", _json("Ready")), **_ERRORS})},
        "/metrics": {"get": _operation("metrics", "Prometheus metrics", {
            "200": _answer("Prometheus text format.", text), **_ERRORS})},
    }
    if not metrics:
        del paths["/metrics"]
    return paths


def _header(value: str | None, description: str) -> dict[str, Any]:
    schema = {"type": "string"} if value is None else {"type": "string", "const": value}
    return {"description": description, "required": True, "schema": schema}


def _caller_auth(auth: str, audience: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The public listener's security scheme for ``--auth`` (auth/): its name, itself,
    and the refusals it brings, by status (403 only where an id is named)."""
    if auth not in (modes.KUBERNETES, modes.API_KEYS):
        raise ValueError(f"no security scheme for --auth {auth}")
    if auth == modes.KUBERNETES:
        scheme = {"type": "http", "scheme": "bearer", "description": (
            f"A Kubernetes ServiceAccount token (a Pod's projected token) with the audience "
            f"`{audience}`, checked by TokenReview; the caller needs RBAC verb `invoke` on "
            "the endpoint's InferenceEndpoint (`inferenceendpoints.inference-operator.dev`), "
            "checked by SubjectAccessReview.")}
        name, challenge, who = "bearerAuth", errors.BEARER_CHALLENGE, "token"
    else:
        scheme = {"type": "apiKey", "in": "header", "name": "Authorization", "description": (
            "`ApiKey base64(id:api_key)`, what the Elasticsearch clients send for "
            "`api_key=(id, api_key)`; a key of `--api-keys-file`.")}
        name, challenge, who = "apiKeyAuth", errors.API_KEY_CHALLENGE, "API key"
    refusals = {
        "401": {**_answer(f"No {who}, another scheme, or one that does not authenticate.",
                          _json("Error")),
                "headers": {**_PRODUCT_HEADER, "WWW-Authenticate": _header(
                    challenge, "The scheme to authenticate with.")}},
        "403": _answer("The caller may not invoke the endpoint, or it does not exist (one "
                       "answer for both, so others' ids are not told).", _json("Error")),
    }
    if auth == modes.KUBERNETES:
        refusals["503"] = {**_answer("The Kubernetes API server did not answer the review; "
                                     "try again.", _json("Error")),
                           "headers": {**_PRODUCT_HEADER, "Retry-After": _header(
                               None, "Seconds before a retry.")}}
        refusals["429"] = {**_answer("A token the gateway does not know, while its budget of "
                                     "reviews is spent (`es_rejected_execution_exception`); "
                                     "try again.", _json("Error")),
                           "headers": {**_PRODUCT_HEADER, "Retry-After": _header(
                               None, "Seconds before a retry.")}}
    return name, scheme, refusals


def document(*, admin: bool, auth: str = modes.NONE,
             audience: str = modes.DEFAULT_AUDIENCE) -> dict[str, Any]:
    """The public listener's document for its ``--auth`` mode (``audience``: kubernetes'),
    or the admin listener's (writes and bearer auth, whatever ``auth`` says)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "inference-operator gateway" + (" (admin listener)" if admin else ""),
            "version": _package_version,
            "description": "Elasticsearch-compatible `_inference` API for Anthropic "
                           "completion and chat completion endpoints (docs/gateway.md). "
                           + ("Every `/_inference` operation needs the admin bearer token."
                              if admin else "The public listener accepts no writes."),
        },
        "paths": {**_inference_paths(admin),
                  **_probe_paths(metrics=admin or auth == modes.NONE)},
        "components": {"schemas": {**_model_schemas(), **copy.deepcopy(_OTHER_SCHEMAS)}},
    }
    if admin:
        doc["components"]["securitySchemes"] = {"adminToken": {
            "type": "http", "scheme": "bearer",
            "description": "The token from `--admin-token-file`."}}
        for path, item in doc["paths"].items():
            if path.startswith("/_inference"):
                for operation in item.values():
                    operation["security"] = [{"adminToken": []}]
                    operation["responses"]["401"] = _answer(
                        "Missing or wrong token (`WWW-Authenticate: Bearer`).", _json("Error"))
    elif auth != modes.NONE:
        # Every /_inference operation authenticates (http._dispatch); those naming an id
        # also authorize (a listing only leaves out what the caller may not invoke).
        name, scheme, refusals = _caller_auth(auth, audience)
        doc["components"]["securitySchemes"] = {name: scheme}
        for path, item in doc["paths"].items():
            if path.startswith("/_inference"):
                for operation in item.values():
                    names_id = any(p["name"] == "inference_id" for p in operation["parameters"])
                    operation["security"] = [{name: []}]
                    # A fresh dict: operations share their responses (_inference_paths).
                    operation["responses"] = {**operation["responses"], **copy.deepcopy(
                        {k: v for k, v in refusals.items() if k != "403" or names_id})}
    return doc


if __name__ == "__main__":  # prints the admin document; make generate writes docs/openapi.json
    import json
    import sys

    json.dump(document(admin=True), sys.stdout, indent=2)
    sys.stdout.write("\n")

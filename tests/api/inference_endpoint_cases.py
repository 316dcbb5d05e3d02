"""Specs every validating layer must judge alike: one valid base and a table of broken ones.

Each case says which field the message must name and, per layer, what it must say is
wrong with it, so a message like "invalid spec" fails the test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from resources import endpoint_spec

FAKE_KEY = "example-key-not-a-real-key"
DELETE = object()


# Both task types take the same settings, so every case is judged alike for each.
TASK_TYPES = ("completion", "chat_completion")


def valid_spec(task_type: str = "completion") -> dict[str, Any]:
    return endpoint_spec("anthropic-credentials", task_type=task_type, max_tokens=1024,
                         rpm=None)


@dataclass(frozen=True)
class Case:
    id: str
    path: str  # dotted, below spec
    value: Any  # DELETE removes the field
    field: str  # the field the message names
    server: str  # what the API server must say about it
    operator: str  # what the operator's validator must say about it

    def spec(self, task_type: str = "completion") -> dict[str, Any]:
        spec = valid_spec(task_type)
        self.apply(spec)
        return spec

    def apply(self, spec: dict[str, Any]) -> None:
        """Makes this case's change in place, if an earlier change left its parent there."""
        *parents, leaf = self.path.split(".")
        node: Any = spec
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
        if self.value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(self.value)


SS = "spec.service_settings"
TS = "spec.task_settings"
REQUIRED, UNKNOWN = "Required value", "unknown field"
LITERAL = "secret_key_ref"
INTEGER, NUMBER = "must be of type integer", "must be of type number"
ID_RULE = "lowercase letters, digits"

INVALID = [
    Case("api_key-literal-string", "service_settings.api_key", FAKE_KEY,
         f"{SS}.api_key", LITERAL, LITERAL),
    Case("api_key-number", "service_settings.api_key", 12345, f"{SS}.api_key", LITERAL, LITERAL),
    Case("api_key-empty", "service_settings.api_key", {},
         f"{SS}.api_key.secret_key_ref", REQUIRED, "is required"),
    Case("api_key-unknown-field", "service_settings.api_key",
         {"secret_key_ref": {"name": "anthropic-credentials"}, "value": FAKE_KEY},
         f"{SS}.api_key", "unknown field(s) value", UNKNOWN),
    Case("secret_key_ref-literal", "service_settings.api_key.secret_key_ref", FAKE_KEY,
         f"{SS}.api_key.secret_key_ref", "must be of type object", "must be an object"),
    Case("secret_key_ref-missing-name", "service_settings.api_key.secret_key_ref",
         {"key": "api_key"}, f"{SS}.api_key.secret_key_ref.name", REQUIRED, "is required"),
    Case("secret_key_ref-bad-name", "service_settings.api_key.secret_key_ref.name",
         "Anthropic_Credentials", f"{SS}.api_key.secret_key_ref.name", "should match",
         "must match"),
    Case("secret_key_ref-other-namespace", "service_settings.api_key.secret_key_ref",
         {"name": "anthropic-credentials", "namespace": "kube-system"},
         f"{SS}.api_key.secret_key_ref.namespace", UNKNOWN, UNKNOWN),
    Case("secret_key_ref-empty-key", "service_settings.api_key.secret_key_ref.key", "",
         f"{SS}.api_key.secret_key_ref.key", "at least 1 chars long", "must not be empty"),
    Case("api_key-missing", "service_settings.api_key", DELETE,
         f"{SS}.api_key", REQUIRED, "is required"),
    Case("model_id-missing", "service_settings.model_id", DELETE,
         f"{SS}.model_id", REQUIRED, "is required"),
    Case("model_id-empty", "service_settings.model_id", "",
         f"{SS}.model_id", "at least 1 chars long", "must not be empty"),
    Case("model_id-number", "service_settings.model_id", 42,
         f"{SS}.model_id", "must be of type string", "must be a string"),
    # Every record is published into a configuration shard shared by all namespaces.
    Case("model_id-too-long", "service_settings.model_id", "m" * 257,
         f"{SS}.model_id", "may not be more than 256", "at most 256 characters"),
    Case("rpm-zero", "service_settings.rate_limit", {"requests_per_minute": 0},
         f"{SS}.rate_limit.requests_per_minute", "greater than or equal to 1",
         "greater than or equal to 1"),
    Case("rpm-negative", "service_settings.rate_limit", {"requests_per_minute": -1},
         f"{SS}.rate_limit.requests_per_minute", "greater than or equal to 1",
         "greater than or equal to 1"),
    Case("rpm-fraction", "service_settings.rate_limit", {"requests_per_minute": 1.5},
         f"{SS}.rate_limit.requests_per_minute", INTEGER, "must be an integer"),
    Case("rate_limit-unknown-field", "service_settings.rate_limit",
         {"requests_per_minute": 10, "burst": 5}, f"{SS}.rate_limit.burst", UNKNOWN, UNKNOWN),
    Case("service_settings-unknown-field", "service_settings.url", "https://example.test",
         f"{SS}.url", UNKNOWN, UNKNOWN),
    Case("service_settings-missing", "service_settings", DELETE,
         SS, REQUIRED, "is required"),
    Case("service_settings-string", "service_settings", "anthropic",
         SS, "must be of type object", "must be an object"),
    Case("task_settings-missing", "task_settings", DELETE, TS, REQUIRED, "is required"),
    Case("task_settings-string", "task_settings", "max_tokens=1024",
         TS, "must be of type object", "must be an object"),
    Case("max_tokens-missing", "task_settings.max_tokens", DELETE,
         f"{TS}.max_tokens", REQUIRED, "is required"),
    Case("max_tokens-zero", "task_settings.max_tokens", 0,
         f"{TS}.max_tokens", "greater than or equal to 1", "greater than or equal to 1"),
    Case("max_tokens-string", "task_settings.max_tokens", "1024",
         f"{TS}.max_tokens", INTEGER, "must be an integer"),
    Case("temperature-too-high", "task_settings.temperature", 1.5,
         f"{TS}.temperature", "less than or equal to 1", "less than or equal to 1"),
    Case("temperature-negative", "task_settings.temperature", -0.1,
         f"{TS}.temperature", "greater than or equal to 0", "greater than or equal to 0"),
    Case("top_p-word", "task_settings.top_p", "high", f"{TS}.top_p", NUMBER, "must be a number"),
    Case("top_p-too-high", "task_settings.top_p", 1.01,
         f"{TS}.top_p", "less than or equal to 1", "less than or equal to 1"),
    Case("top_k-negative", "task_settings.top_k", -1,
         f"{TS}.top_k", "greater than or equal to 0", "greater than or equal to 0"),
    Case("top_k-fraction", "task_settings.top_k", 2.5,
         f"{TS}.top_k", INTEGER, "must be an integer"),
    Case("task_settings-unknown-field", "task_settings.stop_sequences", ["\n"],
         f"{TS}.stop_sequences", UNKNOWN, UNKNOWN),
    Case("service-unknown", "service", "openai",
         "spec.service", 'supported values: "anthropic"', "must be one of anthropic"),
    Case("service-missing", "service", DELETE, "spec.service", REQUIRED, "is required"),
    Case("task_type-unknown", "task_type", "text_embedding", "spec.task_type",
         'supported values: "completion", "chat_completion"',
         "must be one of completion, chat_completion"),
    Case("task_type-missing", "task_type", DELETE, "spec.task_type", REQUIRED, "is required"),
    Case("inference_id-uppercase", "inference_id", "Upper", "spec.inference_id", ID_RULE, ID_RULE),
    Case("inference_id-leading-underscore", "inference_id", "_x",
         "spec.inference_id", ID_RULE, ID_RULE),
    Case("inference_id-trailing-underscore", "inference_id", "x_",
         "spec.inference_id", ID_RULE, ID_RULE),
    Case("inference_id-_all", "inference_id", "_all", "spec.inference_id", ID_RULE, ID_RULE),
    Case("inference_id-space", "inference_id", "my endpoint",
         "spec.inference_id", ID_RULE, ID_RULE),
    Case("inference_id-too-long", "inference_id", "a" * 254,
         "spec.inference_id", "may not be more than 253", "at most 253 characters"),
    Case("inference_id-number", "inference_id", 7,
         "spec.inference_id", "must be of type string", "must be a string"),
    Case("spec-unknown-field", "chunking_settings", {"strategy": "sentence"},
         "spec.chunking_settings", UNKNOWN, UNKNOWN),
]

VALID = {
    "minimal": valid_spec(),
    "chat": valid_spec("chat_completion"),
    "every-field": {
        **valid_spec(),
        "inference_id": "team-a.claude_completion-1",
        "service_settings": {
            "api_key": {"secret_key_ref": {"name": "anthropic-credentials", "key": "key.v2"}},
            "model_id": "claude-sonnet-4-5",
            "rate_limit": {"requests_per_minute": 1},
        },
        "task_settings": {"max_tokens": 1, "temperature": 0.0, "top_k": 0},
    },
    "bounds": {
        **valid_spec(),
        "inference_id": "a",
        "task_settings": {"max_tokens": 200000, "temperature": 1, "top_p": 1.0, "top_k": 500},
    },
}


# Generated specs for property tests. Values come from pools that mix valid and invalid
# ones, so that combinations (several errors at once, odd shapes) get exercised. No nulls:
# the API server drops them before validating, so no stored object ever holds one.
_name = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
valid_specs = st.fixed_dictionaries(
    {
        "task_type": st.sampled_from(TASK_TYPES),
        "service": st.just("anthropic"),
        "service_settings": st.fixed_dictionaries(
            {
                "api_key": st.fixed_dictionaries(
                    {"secret_key_ref": st.fixed_dictionaries(
                        {"name": _name},
                        optional={"key": st.from_regex(r"[-._a-zA-Z0-9]{1,30}", fullmatch=True)},
                    )}
                ),
                "model_id": st.text(min_size=1, max_size=40),
            },
            optional={"rate_limit": st.fixed_dictionaries(
                {}, optional={"requests_per_minute": st.integers(1, 10**6)})},
        ),
        "task_settings": st.fixed_dictionaries(
            {"max_tokens": st.integers(1, 10**6)},
            optional={
                "temperature": st.floats(0, 1),
                "top_p": st.floats(0, 1),
                "top_k": st.integers(0, 10**4),
            },
        ),
    },
    optional={"inference_id": st.from_regex(r"[a-z0-9]([a-z0-9_.-]{0,30}[a-z0-9])?",
                                            fullmatch=True)},
)

# A valid spec with up to three changes from the table above (or harmless ones) on top.
_HARMLESS = [
    Case("both-samplers", "task_settings.top_p", 0.5, "", "", ""),
    Case("dotted-id", "inference_id", "team.a-1_b", "", "", ""),
    Case("other-key", "service_settings.api_key.secret_key_ref.key", "key.v2", "", "", ""),
    Case("slow", "service_settings.rate_limit", {"requests_per_minute": 1}, "", "", ""),
]


def _changed(spec: dict[str, Any], cases: list[Case]) -> dict[str, Any]:
    for case in cases:
        case.apply(spec)
    return spec


near_valid_specs = st.builds(
    _changed,
    valid_specs,
    st.lists(st.sampled_from(INVALID + _HARMLESS), max_size=3),
)

"""A configured inference endpoint and its three renderings: the filtered config that
responses show (no key, no owner), the record the state file and the configuration
shards keep (with both), and the Messages API parameters of a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import SecretStr

from inference_operator.anthropic.client import Client
from inference_operator.api.elasticsearch_body import TaskSettingsOverride
from inference_operator.api.gateway_config import OWNER_KEY
from inference_operator.api.settings import Service, TaskSettings
from inference_operator.gateway import errors
from inference_operator.gateway.org_limits import OrgBudget
from inference_operator.gateway.ratelimit import Bucket


@dataclass(frozen=True)
class Owner:
    """The InferenceEndpoint an endpoint was made from: what RBAC is asked about."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, value: Any) -> Owner:
        """From a record's ``owner``; ESError (so the record is refused) when malformed."""
        if (isinstance(value, dict) and set(value) == {"namespace", "name"}
                and all(isinstance(v, str) and v for v in value.values())):
            return cls(value["namespace"], value["name"])
        raise errors.bad_request(
            f"[{OWNER_KEY}] must be an object with the non-empty strings [namespace] and [name]")

    def record(self) -> dict[str, str]:
        return {"namespace": self.namespace, "name": self.name}


@dataclass(frozen=True, eq=False)
class Endpoint:
    inference_id: str
    task_type: str
    model_id: str
    requests_per_minute: int
    task_settings: TaskSettings
    api_key: SecretStr = field(repr=False)
    client: Client = field(repr=False)
    bucket: Bucket = field(repr=False)
    budget: OrgBudget = field(repr=False)  # the organisation's, shared by the key's endpoints
    owner: Owner | None = None  # none: not made by the operator (the admin API)

    def public(self) -> dict[str, Any]:
        """As Elasticsearch prints a stored config: the key left out entirely."""
        return {
            "inference_id": self.inference_id,
            "task_type": self.task_type,
            "service": Service.ANTHROPIC.value,
            "service_settings": {
                "model_id": self.model_id,
                "rate_limit": {"requests_per_minute": self.requests_per_minute},
            },
            "task_settings": dict(self.settings),
        }

    def stored(self) -> dict[str, Any]:
        """A PUT body plus the id (and the owner): restoring it goes through the same
        validation. Equal to the record it was made from, so an unchanged shard record
        keeps its endpoint."""
        record = self.public()
        record["service_settings"]["api_key"] = self.api_key.get_secret_value()
        if self.owner is not None:
            record[OWNER_KEY] = self.owner.record()
        return record

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The task settings that are set; dumped once per endpoint, not per request."""
        return self.task_settings.model_dump(exclude_none=True)

    def message_params(self, text: str, override: TaskSettingsOverride | None) -> dict[str, Any]:
        settings = self.settings if override is None else {**self.settings, **override.given()}
        # max_tokens, plus temperature/top_k/top_p only when set, as Elasticsearch sends them.
        return {"model": self.model_id, "messages": [{"role": "user", "content": text}],
                **settings}

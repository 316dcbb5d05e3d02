"""What a translator is: one task type's mapping between the Elasticsearch API and
Anthropic's Messages API, both ways, and the token usage Anthropic reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_operator.anthropic.replies import event_usage, message_usage
from inference_operator.gateway.endpoints import Endpoint

# Per stream: each Anthropic event to the data of one ``event: message``, or None.
Translate = Callable[[dict[str, Any]], dict[str, Any] | None]
# (input tokens, output tokens) as reported; not checked, the metrics count only numbers.
Tokens = tuple[Any, Any]


@dataclass(frozen=True)
class Translator:
    # The request body, checked (ESError when it is not right).
    parse: Callable[[bytes], Any]
    # The parsed body with the endpoint's settings, as Messages API parameters.
    params: Callable[[Endpoint, Any], dict[str, Any]]
    # Anthropic's Message as this task type's answer.
    answer: Callable[[dict[str, Any]], dict[str, Any]]
    # A fresh translation of one stream's events (it may keep state between them).
    events: Callable[[], Translate]
    # Errors in OpenAI's shape (ESError.unified_body), as Elasticsearch's chat path has.
    unified_errors: bool = False
    # The tokens a Message, or a stream event (None: it reports none), says were used.
    usage: Callable[[dict[str, Any]], Tokens] = message_usage
    event_usage: Callable[[dict[str, Any]], Tokens | None] = event_usage

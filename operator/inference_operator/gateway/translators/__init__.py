"""One translator per task type: how a request body is read, how it becomes Messages API
parameters, how Anthropic's answer is rendered (whole, or per stream event) and what
tokens it used. Rate limit, queue, retries, timeouts, metrics and caller access are the
same code for every task type (pipeline.py, http.py)."""

from __future__ import annotations

from inference_operator.api.settings import TaskType
from inference_operator.gateway.translators.base import Translator
from inference_operator.gateway.translators.chat_completion import CHAT_COMPLETION
from inference_operator.gateway.translators.completion import COMPLETION

_BY_TASK_TYPE = {TaskType.COMPLETION: COMPLETION, TaskType.CHAT_COMPLETION: CHAT_COMPLETION}


def for_task_type(task_type: str) -> Translator:
    return _BY_TASK_TYPE.get(task_type, COMPLETION)

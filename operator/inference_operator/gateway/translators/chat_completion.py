"""``chat_completion``: Elasticsearch's unified chat body (chat/request.py) to Messages
API parameters (chat/messages.py), answered as OpenAI's ``chat.completion`` or its
chunks (chat/chunks.py), with errors in OpenAI's shape."""

from __future__ import annotations

from inference_operator.gateway.chat import chunks, messages
from inference_operator.gateway.chat import request as chat_request
from inference_operator.gateway.translators.base import Translator

CHAT_COMPLETION = Translator(
    parse=chat_request.parse,
    params=messages.message_params,
    answer=chunks.completion,
    events=lambda: chunks.ChunkStream().chunk,
    unified_errors=True,
)

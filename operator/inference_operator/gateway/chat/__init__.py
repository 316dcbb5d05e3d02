"""``chat_completion``: Elasticsearch's unified (OpenAI-style) chat API, served by
Anthropic's Messages API. ``request`` reads and checks the body, ``messages`` builds the
Messages API call from it, ``chunks`` turns the answer (streamed or whole) into
OpenAI-style chat completion objects. docs/gateway.md, "Chat completion", says where the
shapes follow Elasticsearch and where, and why, they do not."""

"""Where Anthropic's API is: the one place the address is written; every default (the
gateway's upstream, the operator's key check, dev mode with a real key) refers here."""

from __future__ import annotations

ANTHROPIC_API_URL = "https://api.anthropic.com"

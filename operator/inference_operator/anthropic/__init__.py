"""Anthropic's API as this project calls it, knowing nothing of the API the gateway
serves: the client (client.py, stream.py), its connection shares (slots.py) and its
failures (errors.py), shared by the gateway and the operator's key check.

Where Anthropic's API is, written once: every default (the gateway's upstream, the
operator's key check, dev mode with a real key) refers here."""

from __future__ import annotations

ANTHROPIC_API_URL = "https://api.anthropic.com"

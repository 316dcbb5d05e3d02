"""Which models share one set of Anthropic's rate limits: the emulator enforces them per
class and the gateway budgets them per class."""

from __future__ import annotations

import re

_CLASS = (re.compile(r"^claude-(opus|sonnet|haiku)-(\d+)(?:\D|$)"),  # claude-sonnet-4-5-2025...
          re.compile(r"^claude-(\d+)(?:-\d)?-(opus|sonnet|haiku)"))  # claude-3-5-haiku-2024...


def model_class(model: str) -> str:
    """Models that share one set of limits: a family and its major version (Sonnet 4 and
    4.5 share, Opus 4, 4.1 and 4.5 share); an unrecognised id is a class of its own."""
    if match := _CLASS[0].match(model):
        return f"{match[1]}-{match[2]}"
    if match := _CLASS[1].match(model):
        return f"{match[2]}-{match[1]}"
    return model

"""The objects that carry a Secret's data or a key show neither in their repr, so a debug
log line or a traceback that prints one cannot leak it."""

from __future__ import annotations

import base64

from inference_operator.controller.kube import SecretValue
from inference_operator.controller.secrets import ResolvedKey, SecretRef

KEY = "sk-ant-api03-repr-test-key"
ENCODED = base64.b64encode(KEY.encode()).decode()


def test_a_secret_value_shows_its_version_not_its_data() -> None:
    shown = repr(SecretValue({"api_key": ENCODED}, "42"))
    assert ENCODED not in shown and "42" in shown


def test_a_resolved_key_shows_its_reference_not_the_key() -> None:
    ref = SecretRef("team-a", "anthropic-credentials", "api_key")
    shown = repr(ResolvedKey(KEY, ref, "42"))
    assert KEY not in shown and "anthropic-credentials" in shown


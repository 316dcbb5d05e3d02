"""The InferenceEndpoint API installed from the generated crds/ files, as a user installs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from inference_endpoint_cases import FAKE_KEY, LITERAL, valid_spec

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll
from inference_operator.api import models
from resources import inference_endpoint

ROOT = Path(__file__).resolve().parents[2]


def _literal_key_denied(kubectl: Kubectl) -> bool:
    spec = valid_spec()
    spec["service_settings"]["api_key"] = FAKE_KEY
    result = kubectl.apply(
        inference_endpoint("policy-probe", spec), "default", "--dry-run=server", check=False
    )
    return LITERAL in result.stderr


def _sampling_warned(kubectl: Kubectl) -> bool:
    spec = valid_spec()
    spec["task_settings"].update(temperature=0.5, top_p=0.5)
    result = kubectl.apply(inference_endpoint("policy-probe", spec), "default", "--dry-run=server")
    return models.SAMPLING_WARNING in result.stderr


@pytest.fixture(scope="module")
def api_installed(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(ROOT / "crds"))
    kubectl.wait_for_condition(f"crd/{models.CRD_NAME}", "Established", timeout=30)
    # Admission policies take effect a moment after they are created.
    poll(lambda: _literal_key_denied(kubectl), timeout=30, message="deny policy active")
    poll(lambda: _sampling_warned(kubectl), timeout=30, message="warn policy active")

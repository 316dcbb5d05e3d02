"""The control plane restarts under a running operator: its watches must resume by
themselves, and a change made after the restart must reach the gateway and the upstream."""

from __future__ import annotations

import time

import pytest

from inference_devkit.controlplane.launcher import ControlPlane
from operator_support import complete, condition, emulator_requests, wait_caught_up
from resources import endpoint, secret

# kopf retries a failed watch with backoffs of 1, 1, 2, 3, 5, 8, 13, 21 s; the API server
# takes several seconds to come back on a loaded 2-core machine.
RESUME_TIMEOUT = 90.0


@pytest.mark.parametrize("restarted", [
    pytest.param(("kube-apiserver",), id="kube-apiserver"),
    pytest.param(("etcd", "kube-apiserver"), id="etcd-and-kube-apiserver"),
])
def test_a_change_after_a_control_plane_restart_is_reconciled(
    restarted: tuple[str, ...], stack, kubectl, namespace, control_plane: ControlPlane,
    scale: int,
):
    if not control_plane.is_local:
        pytest.skip("an existing cluster's control plane is not ours to restart")
    kept, changed = f"{namespace}-kept", f"{namespace}-changed"
    kubectl.apply([secret("anthropic"), endpoint("kept", inference_id=kept),
                   endpoint("changed", inference_id=changed, max_tokens=64)], namespace)
    for name in ("kept", "changed"):
        kubectl.wait_for_condition(f"iep/{name}", "Ready", namespace)

    for round_ in range(scale):
        began = time.monotonic()
        control_plane.restart(*restarted)
        back = time.monotonic()

        # Both kinds of change a user makes: a spec edit and a new resource.
        max_tokens, added = 100 + round_, f"added{round_}"
        kubectl.apply([endpoint("changed", inference_id=changed, max_tokens=max_tokens),
                       endpoint(added, inference_id=f"{namespace}-{added}")], namespace)
        wait_caught_up(kubectl, namespace, "changed", timeout=RESUME_TIMEOUT)
        wait_caught_up(kubectl, namespace, added, timeout=RESUME_TIMEOUT)
        print(f"{'+'.join(restarted)} restarted in {back - began:.1f}s; "
              f"the change after it Ready {time.monotonic() - back:.1f}s later")

        assert complete(stack, changed)[0] == 200
        assert emulator_requests(stack)[-1]["body"]["max_tokens"] == max_tokens
        assert complete(stack, f"{namespace}-{added}")[0] == 200
    # What was served before the restart was never disturbed.
    assert complete(stack, kept)[0] == 200
    assert condition(kubectl.get("iep", "kept", namespace))["reason"] == "Serving"

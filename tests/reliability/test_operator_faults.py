"""The operator SIGKILLed in the middle of a burst of creates: after its restart every
resource converges, and no object gets a storm of repeated Events."""

from __future__ import annotations

import json
import threading
import time

from inference_devkit.waiting import poll
from operator_support import complete, condition, event_counts
from resources import endpoint, secret

BURST = 100  # times ``scale`` under ``make soak``
CHUNK = 4  # objects per kubectl call: many small creates, as many clients make them


def _not_caught_up(kubectl, namespace: str) -> list[str]:
    listed = json.loads(kubectl.run("get", "iep", "-n", namespace, "-o", "json").stdout)
    return [o["metadata"]["name"] for o in listed["items"]
            if (o.get("status") or {}).get("observedGeneration") != o["metadata"]["generation"]
            or condition(o).get("status") != "True"]


def test_an_operator_killed_during_a_burst_of_creates_converges_without_event_storms(
    stack, kubectl, namespace, scale: int
):
    operator = stack.services["operator"]
    burst = BURST * scale
    names = [f"b{i:04}" for i in range(burst)]
    kubectl.apply(secret("anthropic"), namespace)

    # In small requests, so the kill lands while creates are still arriving and
    # reconciles are in flight.
    def create() -> None:
        for start in range(0, burst, CHUNK):
            kubectl.apply([endpoint(name, inference_id=f"{namespace}-{name}")
                           for name in names[start:start + CHUNK]], namespace)

    creator = threading.Thread(target=create)
    creator.start()
    try:
        # Kill once the operator is well into the burst, with reconciles in flight.
        poll(lambda: sum(event_counts(kubectl, namespace).values()) >= burst // 5,
             timeout=60, message="the operator never got going on the burst")
        operator.kill()
        killed_with = sum(event_counts(kubectl, namespace).values())
        created = len(json.loads(kubectl.run(
            "get", "iep", "-n", namespace, "-o", "json").stdout)["items"])
        time.sleep(1)  # creates keep arriving while no operator runs
        operator.start()
    finally:
        creator.join(300 * scale)

    assert len(names) == burst
    poll(lambda: not _not_caught_up(kubectl, namespace), timeout=120 * scale, interval=1,
         message="not every endpoint converged")
    settled = event_counts(kubectl, namespace)
    assert all(complete(stack, f"{namespace}-{name}")[0] == 200 for name in names)

    # No storm in progress: nothing more was posted while all those completions ran...
    assert event_counts(kubectl, namespace) == settled
    # ...and per object: Serving at most once per operator life that saw it, nothing else.
    assert {reason for _, reason in settled} == {"Serving"}, settled
    assert {name for name, _ in settled} == set(names)
    assert max(settled.values()) <= 2, settled.most_common(5)
    repeated = sum(1 for count in settled.values() if count > 1)
    print(f"killed at {created}/{burst} created, {killed_with} Events; all Ready after, "
          f"{sum(settled.values())} Events, {repeated} objects with a repeated Serving")

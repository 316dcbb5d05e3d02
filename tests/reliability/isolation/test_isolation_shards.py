"""The configuration shards every namespace shares, with the real operator,
gateway and API server: a hostile namespace with keys at and past the bound, keys of
600 KiB (two of them once froze a shard) and more endpoints than its cap cannot keep
another team's new endpoint from being served, nor a revoked key from leaving the
gateway. The figures go to docs/reliability.md, "Isolation: configuration shards"."""

from __future__ import annotations

import itertools
import json
import time

from inference_devkit.controlplane.kubectl import to_yaml
from inference_devkit.waiting import poll
from inference_operator.api.gateway_config import Shards
from inference_operator.api.settings import API_KEY_MAX_LENGTH
from operator_support import complete, condition, http, restarted_with, wait_caught_up, wait_reason
from resources import KEY, endpoint, secret

CAP = 5  # the hostile namespace's share, small so the test stays short
HUGE = 600 * 1024  # a "key" well under a Secret's 1 MiB; two fill a shard
WAIT = 90


def key_of_length(tag: str, length: int) -> str:
    return (f"fake-key-test-{tag}-" + "k" * length)[:length]


def ids_in_shard(shards: Shards, shard: str, prefix: str, count: int) -> list[str]:
    candidates = (f"{prefix}-{n}" for n in itertools.count())
    return list(itertools.islice((i for i in candidates if shards.of(i) == shard), count))


def served(stack, inference_id: str) -> bool:
    """The gateway has the endpoint (GET _inference/ID: its settings, never its key)."""
    status = http("GET", f"{stack.gateway_url}/_inference/completion/{inference_id}")[0]
    assert status in (200, 404), status
    return status == 200


def reasons(kubectl, namespace: str) -> dict[str, str]:
    listed = kubectl.run("get", "iep", "-n", namespace, "-o", "json").stdout
    return {o["metadata"]["name"]: condition(o).get("reason", "")
            for o in json.loads(listed)["items"]}


def test_a_hostile_namespace_cannot_keep_other_teams_out_of_the_shards(
        stack, kubectl, namespace) -> None:
    hostile = f"{namespace}-hostile"
    kubectl.run("create", "namespace", hostile)
    shards = Shards(stack.config_secret)
    # Everything of interest in one shard: the one the huge keys would have frozen.
    target = shards.of(f"{namespace}-new")
    team_ids = {"old": f"{namespace}-old", "revoked": f"{namespace}-revoked"}
    for name, inference_id in list(team_ids.items()):
        if shards.of(inference_id) != target:
            team_ids[name] = ids_in_shard(shards, target, inference_id, 1)[0]
    team_ids["new"] = f"{namespace}-new"
    huge_ids = ids_in_shard(shards, target, f"{hostile}-huge", 2)
    at_bound = key_of_length("BOUND", API_KEY_MAX_LENGTH)
    keys = {"bound": at_bound, "over": key_of_length("OVER", API_KEY_MAX_LENGTH + 1),
            "huge": key_of_length("HUGE", HUGE), "plain": KEY}
    operator = stack.services["operator"]
    try:
        with restarted_with(operator, f"--max-endpoints-per-namespace={CAP}",
                            "--no-verify-upstream"):
            kubectl.apply([secret("anthropic"), secret("revocable")], namespace)
            kubectl.apply([endpoint("old", inference_id=team_ids["old"]),
                           endpoint("revoked", "revocable", inference_id=team_ids["revoked"])],
                          namespace)
            for name in ("old", "revoked"):
                wait_caught_up(kubectl, namespace, name, timeout=WAIT)

            # The hostile namespace: created, not applied (the last-applied annotation
            # cannot hold 600 KiB).
            kubectl.run("create", "-n", hostile, "-f", "-", stdin=to_yaml(
                [secret(name, key) for name, key in keys.items()]))
            many = [f"many-{n}" for n in range(CAP + 2)]
            kubectl.apply([
                endpoint("bound", "bound", inference_id=f"{hostile}-bound"),
                endpoint("over", "over", inference_id=f"{hostile}-over"),
                *(endpoint(f"huge-{n}", "huge", inference_id=i) for n, i in enumerate(huge_ids)),
                *(endpoint(name, "plain", inference_id=f"{hostile}-{name}") for name in many),
            ], hostile)

            # Another team's new endpoint turns Ready and is served meanwhile.
            started = time.monotonic()
            kubectl.apply(endpoint("new", inference_id=team_ids["new"]), namespace)
            wait_caught_up(kubectl, namespace, "new", timeout=WAIT)
            print(f"\nanother team's endpoint Ready {time.monotonic() - started:.2f} s after "
                  "its create, with the hostile namespace present")
            assert complete(stack, team_ids["new"])[0] == 200

            # The hostile keys: at the bound served, past it never published.
            wait_caught_up(kubectl, hostile, "bound", timeout=WAIT)
            for name in ("over", "huge-0", "huge-1"):
                invalid = wait_reason(kubectl, hostile, name, "SecretKeyInvalid", timeout=WAIT)
                assert f"at most {API_KEY_MAX_LENGTH}" in condition(invalid)["message"]
            assert not any(served(stack, i) for i in (f"{hostile}-over", *huge_ids))
            assert served(stack, f"{hostile}-bound")

            # The cap: the bound one and CAP - 1 others published, the rest wait.
            def settled() -> dict[str, str] | None:
                found = reasons(kubectl, hostile)
                states = [found.get(name) for name in ["bound", *many]]
                return found if states.count("Serving") == CAP and states.count(
                    "NamespaceQuotaExceeded") == len(many) + 1 - CAP else None

            found = poll(settled, timeout=WAIT, interval=0.5, message="hostile cap not reached")
            refused = [n for n in many if found[n] == "NamespaceQuotaExceeded"]
            refused_status = kubectl.get("iep", refused[0], hostile)
            assert condition(refused_status, "Reconciling")["status"] == "True"
            assert "--max-endpoints-per-namespace" in condition(refused_status)["message"]
            assert not served(stack, f"{hostile}-{refused[0]}")

            # A revocation goes through: the deleted Secret's key leaves the gateway.
            started = time.monotonic()
            kubectl.run("delete", "secret", "revocable", "-n", namespace)
            wait_reason(kubectl, namespace, "revoked", "SecretNotFound", timeout=WAIT)
            poll(lambda: not served(stack, team_ids["revoked"]), timeout=WAIT,
                 interval=0.2, message="the revoked key is still served")
            print(f"revoked key out of the gateway {time.monotonic() - started:.2f} s after "
                  "its Secret's delete")
            assert complete(stack, team_ids["old"])[0] == 200

            # One published hostile endpoint goes: a waiting one takes its place.
            published = next(n for n in many if found[n] == "Serving")
            started = time.monotonic()
            kubectl.run("delete", "iep", published, "-n", hostile, "--timeout=60s")
            poll(lambda: sum(r == "Serving" for r in reasons(kubectl, hostile).values()) == CAP,
                 timeout=WAIT, interval=0.2, message="no refused endpoint took over")
            print(f"a refused endpoint Ready {time.monotonic() - started:.2f} s after a "
                  "published one of its namespace was deleted")

            outputs = (kubectl.run("get", "iep", "-A", "-o", "json").stdout
                       + kubectl.run("get", "events", "-A", "-o", "json").stdout
                       + operator.log_text())
            for tag in ("BOUND", "OVER", "HUGE"):
                assert f"fake-key-test-{tag}" not in outputs
            # Leave no hostile record in the session's shards.
            for ns in (hostile, namespace):
                kubectl.run("delete", "iep", "--all", "-n", ns, "--timeout=60s")
    finally:
        kubectl.run("delete", "namespace", hostile, "--wait=false", check=False)

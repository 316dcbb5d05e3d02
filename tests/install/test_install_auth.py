"""Who may call (docs/install.md): the chart's gateway.auth values as the gateway's flags in
both modes, the auth-delegator binding of the gateway's identity, the invoker ClusterRole
and the examples' grant; the RBAC checked against the real API server (impersonated and
with tokens it issued), and a real gateway running as the chart's identity with the
chart's flags, letting in exactly the callers RBAC grants."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_install_rbac import AUTH_DELEGATOR, OPERATOR_NEEDS, Operator, service_account

from inference_devkit import chart
from inference_devkit.chart import documents, helm_template
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from inference_devkit.waiting import poll
from inference_operator.api.gateway_config import OWNER_KEY, Shard, Shards
from inference_operator.cli.main import build_parser
from inference_operator.gateway.server import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VALUES = yaml.safe_load((ROOT / chart.CHART / "values.yaml").read_text())
MODES = {"sidecar": ["--set=gateway.mode=sidecar"], "fleet": []}  # fleet: the default
INVOKE_RULE = {"apiGroups": ["inference-operator.dev"], "resources": ["inferenceendpoints"],
               "verbs": ["invoke"]}
DELEGATOR = "inference-operator-gateway-auth-delegator"
TOKEN_REVIEWER = "inference-operator-gateway-token-reviewer"
INVOKER = "inference-operator-invoker"
IEP = "inferenceendpoints"
AUDIENCE = "inference-operator"
# The chart's gateway flags about callers, passed on to a gateway started here.
AUTH_FLAGS = ("--auth", "--access-log", "--no-access-log", "--caller-metrics-service-account",
              "--caller-metrics-accounts", "--caller-metrics-accounts-per-namespace")


def render(*values: str, **kwargs) -> list[dict]:
    return documents(helm_template(*values, **kwargs).stdout)


def objects(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def gateway_pod(rendered: list[dict]) -> dict:
    """The pod spec holding the gateway container, in either mode."""
    (pod,) = (d["spec"]["template"]["spec"] for d in rendered if d["kind"] == "Deployment"
              and "gateway" in {c["name"] for c in d["spec"]["template"]["spec"]["containers"]})
    return pod


def gateway_args(rendered: list[dict]) -> list[str]:
    (container,) = (c for c in gateway_pod(rendered)["containers"] if c["name"] == "gateway")
    return container["args"]


def helm_test_pod(*values: str) -> dict:
    (pod,) = render(*values, "--show-only=templates/tests/test-gateway.yaml")
    return pod


def example(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


# -- the render -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_by_default_the_gateway_authenticates_with_kubernetes_in_both_modes(mode: str) -> None:
    args = build_parser().parse_args(gateway_args(render(*MODES[mode])))
    auth = VALUES["gateway"]["auth"]

    assert auth == {"mode": "kubernetes", "audience": AUDIENCE, "cacheSeconds": 10,
                    "reviewsInFlight": 8, "reviewsPerSecond": 20,
                    "callerMetricsServiceAccount": False, "callerMetricsAccounts": 1000,
                    "callerMetricsAccountsPerNamespace": 100}
    assert VALUES["gateway"]["accessLog"] is True
    assert (args.auth, args.auth_audience, args.auth_cache_seconds) == (
        "kubernetes", AUDIENCE, 10)
    assert args.access_log is True
    assert args.caller_metrics_service_account is False
    assert args.api_keys_file is None
    # The review budget's defaults are the gateway's own (one place per default).
    defaults = GatewayConfig()
    assert (args.auth_reviews_in_flight, args.auth_reviews_per_second) == (
        defaults.auth_reviews_in_flight, defaults.auth_reviews_per_second)
    assert (auth["callerMetricsAccounts"], auth["callerMetricsAccountsPerNamespace"]) == (
        defaults.caller_metrics_accounts, defaults.caller_metrics_accounts_per_namespace)


@pytest.mark.parametrize("mode", MODES)
def test_the_auth_values_become_the_gateways_flags(mode: str) -> None:
    rendered = render(*MODES[mode], "--set=gateway.auth.audience=inference.example.com",
                      "--set-json=gateway.auth.cacheSeconds=2.5",
                      "--set=gateway.auth.reviewsInFlight=3",
                      "--set-json=gateway.auth.reviewsPerSecond=0.5",
                      "--set=gateway.auth.callerMetricsServiceAccount=true",
                      "--set=gateway.auth.callerMetricsAccounts=40",
                      "--set=gateway.auth.callerMetricsAccountsPerNamespace=4",
                      "--set=gateway.accessLog=false")
    args = build_parser().parse_args(gateway_args(rendered))

    assert (args.auth, args.auth_audience, args.auth_cache_seconds) == (
        "kubernetes", "inference.example.com", 2.5)
    assert (args.auth_reviews_in_flight, args.auth_reviews_per_second) == (3, 0.5)
    assert args.caller_metrics_service_account is True
    assert (args.caller_metrics_accounts, args.caller_metrics_accounts_per_namespace) == (40, 4)
    assert args.access_log is False
    # The helm test pod asks for a token of the same audience.
    (volume,) = helm_test_pod("--set=gateway.auth.audience=inference.example.com")[
        "spec"]["volumes"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "inference.example.com"


@pytest.mark.parametrize("mode", MODES)
def test_auth_none_is_an_explicit_opt_out_without_the_delegator_binding(mode: str) -> None:
    rendered = render(*MODES[mode], "--set=gateway.auth.mode=none")
    args = gateway_args(rendered)

    assert build_parser().parse_args(args).auth == "none"
    assert "--auth=none" in args
    assert not [a for a in args if a.startswith("--auth-")]
    assert DELEGATOR not in objects(rendered, "ClusterRoleBinding")
    # Fleet gateways still review each other's tokens (peer admission), nothing else.
    reviewer = objects(rendered, "ClusterRole").get(TOKEN_REVIEWER)
    if mode == "fleet":
        assert reviewer is not None and reviewer["rules"] == [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
             "verbs": ["create"]}]
        binding = objects(rendered, "ClusterRoleBinding")[TOKEN_REVIEWER]
        assert binding["subjects"][0]["name"] == gateway_pod(rendered)["serviceAccountName"]
    else:
        assert reviewer is None
    assert INVOKER in objects(rendered, "ClusterRole")  # grants can be made ahead
    pod = helm_test_pod(*MODES[mode], "--set=gateway.auth.mode=none")["spec"]
    assert "volumes" not in pod
    assert {e["name"]: e["value"] for e in pod["containers"][0]["env"]}["TOKEN_FILE"] == ""


@pytest.mark.parametrize("values", [["--set=gateway.mode=sidecar"], [],
                                    ["--set=watchNamespaces={team-a}"]],
                         ids=["sidecar", "fleet", "namespaced"])
def test_the_gateways_identity_and_only_it_is_bound_to_system_auth_delegator(
    values: list[str],
) -> None:
    rendered = render(*values)
    pod = gateway_pod(rendered)
    binding = objects(rendered, "ClusterRoleBinding")[DELEGATOR]

    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "system:auth-delegator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": "inference-operator"}]
    assert binding["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    # Nothing else of the chart refers to it, and namespaced mode has no other
    # cluster-wide binding.
    assert [d for d in rendered if d.get("roleRef", {}).get("name")
            == "system:auth-delegator"] == [binding]
    if "watchNamespaces" in str(values):
        assert list(objects(rendered, "ClusterRoleBinding")) == [DELEGATOR]


def test_the_invoker_cluster_role_allows_invoke_only_and_is_bound_to_nobody() -> None:
    rendered = render()
    invoker = objects(rendered, "ClusterRole")[INVOKER]

    assert invoker["rules"] == [INVOKE_RULE]
    # Not aggregated into admin/edit/view: calling spends money.
    assert "aggregationRule" not in invoker
    assert not [label for label in invoker["metadata"]["labels"] if "aggregate-to" in label]
    assert not [d for d in rendered if d.get("roleRef", {}).get("name") == INVOKER]


def test_without_rbac_create_there_is_neither_the_invoker_nor_the_delegator_binding() -> None:
    rendered = render("--set=rbac.create=false")
    assert INVOKER not in objects(rendered, "ClusterRole")
    assert objects(rendered, "ClusterRoleBinding") == {}
    # The gateway still authenticates: whoever manages RBAC must bind its identity.
    assert build_parser().parse_args(gateway_args(rendered)).auth == "kubernetes"


@pytest.mark.parametrize(("value", "message"), [
    ("--set=gateway.auth.mode=oidc", "value must be one of 'kubernetes', 'none'"),
    ("--set=gateway.auth.mode=api-keys", "value must be one of 'kubernetes', 'none'"),
    ("--set=gateway.auth.audiences=x", "'audiences' not allowed"),
    ("--set=gateway.auth.audience=", "/gateway/auth/audience"),
    ("--set=gateway.auth.cacheSeconds=-1", "/gateway/auth/cacheSeconds"),
    ("--set=gateway.auth.reviewsInFlight=0", "/gateway/auth/reviewsInFlight"),
    ("--set=gateway.auth.reviewsPerSecond=0", "/gateway/auth/reviewsPerSecond"),
    ("--set=gateway.auth.callerMetricsServiceAccount=maybe",
     "/gateway/auth/callerMetricsServiceAccount"),
])
def test_a_wrong_auth_value_fails_the_render(value: str, message: str) -> None:
    result = helm_template(value, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_helm_test_pod_calls_with_a_projected_token_of_the_gateways_audience() -> None:
    pod = helm_test_pod()["spec"]
    (container,) = pod["containers"]
    (volume,) = pod["volumes"]
    (mount,) = container["volumeMounts"]
    env = {e["name"]: e["value"] for e in container["env"]}

    assert pod["automountServiceAccountToken"] is False
    assert volume["name"] == mount["name"] and mount["readOnly"] is True
    assert volume["projected"]["sources"] == [{"serviceAccountToken": {
        "path": "token", "audience": AUDIENCE, "expirationSeconds": 600}}]
    assert env["TOKEN_FILE"] == f"{mount['mountPath']}/token"


# -- RBAC against the real API server ---------------------------------------------------


def may(who: Operator, verb: str, target: str, *where: str) -> bool:
    """`kubectl auth can-i VERB TARGET`, where TARGET may name an object (``iep/NAME``)."""
    result = who.run("auth", "can-i", verb, target, *where)
    assert result.stdout.strip() in {"yes", "no"}, result.stderr
    return result.stdout.strip() == "yes"


def create_token(kubectl: Kubectl, namespace: str, account: str, *extra: str) -> str:
    return kubectl.run("create", "token", account, "-n", namespace, *extra).stdout.strip()


def token_review(as_gateway: Operator, token: str) -> dict:
    """As the gateway asks (a POST of the review): the token, and the audience it must be
    meant for."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": token, "audiences": [AUDIENCE]}}
    made = as_gateway.run("create", "--raw=/apis/authentication.k8s.io/v1/tokenreviews",
                          "-f", "-", stdin=json.dumps(review))
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["status"]


def access_review(as_gateway: Operator, user: dict, namespace: str, name: str) -> bool:
    """As the gateway asks: may this user invoke that InferenceEndpoint."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user["username"], "groups": user.get("groups", []),
                       "uid": user.get("uid", ""),
                       "resourceAttributes": {"group": "inference-operator.dev",
                                              "resource": IEP, "verb": "invoke",
                                              "namespace": namespace, "name": name}}}
    made = as_gateway.run("create",
                          "--raw=/apis/authorization.k8s.io/v1/subjectaccessreviews",
                          "-f", "-", stdin=json.dumps(review))
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["status"]["allowed"]


@pytest.mark.parametrize("mode", MODES)
def test_the_gateway_identity_reviews_tokens_and_access_as_the_gateway_does(
    mode: str, chart_rbac, kubectl: Kubectl, make_namespaces, namespace: str, release: str,
) -> None:
    fleet = mode == "fleet"
    chart_rbac(f"--set=gateway.mode={mode}")
    fullname = f"{release}-inference-operator"
    gateway = Operator(kubectl.kubeconfig,
                       service_account(namespace, fullname + ("-gateway" if fleet else "")))
    (team,) = make_namespaces(1)
    kubectl.run("create", "serviceaccount", "app", "-n", team)

    for resource in AUTH_DELEGATOR:
        assert gateway.can("create", resource), resource
    if fleet:  # the operator's identity makes no review
        operator = Operator(kubectl.kubeconfig, service_account(namespace, fullname))
        assert operator.grants(team) == OPERATOR_NEEDS
    # A token of the audience authenticates; the same account's API token does not.
    user = token_review(gateway, create_token(kubectl, team, "app", f"--audience={AUDIENCE}"))
    assert user["authenticated"] is True
    assert user["user"]["username"] == service_account(team, "app")
    assert AUDIENCE in user["audiences"]
    assert not token_review(gateway, create_token(kubectl, team, "app")).get("authenticated")
    # May it invoke: no, until a RoleBinding to the invoker ClusterRole in its namespace.
    assert access_review(gateway, user["user"], team, "anthropic-completion") is False
    kubectl.run("create", "rolebinding", "app-invoke", "-n", team,
                f"--clusterrole={fullname}-invoker", f"--serviceaccount={team}:app")
    assert poll(lambda: access_review(gateway, user["user"], team, "anthropic-completion"),
                timeout=10, interval=0.2, message="the RoleBinding never allowed invoke")


def test_with_auth_none_the_gateway_identity_reviews_only_its_peers_tokens(
    chart_rbac, kubectl: Kubectl, namespace: str, release: str,
) -> None:
    """Peer admission (fleet mode's default) needs TokenReviews for the peers' tokens; no
    SubjectAccessReview, and without peer admission no review at all."""
    gateway = Operator(kubectl.kubeconfig,
                       service_account(namespace, f"{release}-inference-operator-gateway"))
    chart_rbac("--set=gateway.mode=fleet", "--set=gateway.auth.mode=none",
               "--set=gateway.peerAdmission.enabled=false")
    for resource in AUTH_DELEGATOR:
        assert not gateway.can("create", resource), resource
    chart_rbac("--set=gateway.mode=fleet", "--set=gateway.auth.mode=none")
    assert gateway.can("create", "tokenreviews.authentication.k8s.io")
    assert not gateway.can("create", "subjectaccessreviews.authorization.k8s.io")


def test_the_invoker_bound_in_a_namespace_lets_call_its_endpoints_and_none_elsewhere(
    chart_rbac, kubectl: Kubectl, make_namespaces, release: str,
) -> None:
    """The NOTES' and docs' commands, as a platform team runs them."""
    chart_rbac()
    team_a, team_b = make_namespaces(2)
    app = Operator(kubectl.kubeconfig, service_account(team_a, "app"))
    kubectl.run("create", "serviceaccount", "app", "-n", team_a)
    assert not may(app, "invoke", f"{IEP}/anthropic-completion", "-n", team_a)

    kubectl.run("create", "rolebinding", "app-invoke", "-n", team_a,
                f"--clusterrole={release}-inference-operator-invoker",
                f"--serviceaccount={team_a}:app")

    for name in ("anthropic-completion", "any-other"):
        assert may(app, "invoke", f"{IEP}/{name}", "-n", team_a), name
        assert not may(app, "invoke", f"{IEP}/{name}", "-n", team_b), name
    assert not app.can("invoke", IEP, "--all-namespaces")
    for verb in ("get", "list", "create", "patch", "delete"):
        assert not app.can(verb, IEP, "-n", team_a), verb
    assert app.grants(team_b) == {}


def test_who_may_edit_a_namespaces_endpoints_can_neither_invoke_nor_grant_invoke(
    chart_rbac, kubectl: Kubectl, make_namespaces, release: str,
) -> None:
    """Invoking is granted on purpose: the invoker role is aggregated into no built-in
    role (checked on the render above), and having every other verb on the endpoints plus
    the right to create RoleBindings (what a namespace admin has) does not give it, nor
    the power to grant it (RBAC's escalation check). The built-in admin role itself is
    aggregated by a controller this control plane does not run, so its rules are spelled
    out here."""
    chart_rbac()
    (team,) = make_namespaces(1)
    kubectl.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "endpoint-admin"},
        "rules": [{"apiGroups": ["inference-operator.dev"], "resources": [IEP],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete",
                             "deletecollection"]},
                  {"apiGroups": ["rbac.authorization.k8s.io"],
                   "resources": ["roles", "rolebindings"],
                   "verbs": ["get", "list", "create", "update", "patch", "delete"]}],
    }, team)
    kubectl.run("create", "rolebinding", "alice-admin", "-n", team, "--role=endpoint-admin",
                "--user=alice")
    kubectl.run("create", "serviceaccount", "app", "-n", team)
    alice = Operator(kubectl.kubeconfig, "alice")

    assert alice.can("create", "rolebindings.rbac.authorization.k8s.io", "-n", team)
    assert alice.can("delete", IEP, "-n", team)
    assert not may(alice, "invoke", f"{IEP}/anthropic-completion", "-n", team)
    granted = alice.run("create", "rolebinding", "app-invoke", "-n", team,
                        f"--clusterrole={release}-inference-operator-invoker",
                        f"--serviceaccount={team}:app")
    assert granted.returncode != 0
    assert "attempting to grant RBAC permissions not currently held" in granted.stderr, (
        granted.stderr)


def test_the_examples_let_example_app_invoke_exactly_the_example_endpoint(
    crd_installed, kubectl: Kubectl, make_namespaces,
) -> None:
    team, other = make_namespaces(2)
    (endpoint,) = example("anthropic-completion.yaml")
    name = endpoint["metadata"]["name"]
    grant = example("example-app.yaml")
    kubectl.apply(grant, team)
    app = Operator(kubectl.kubeconfig, service_account(team, "example-app"))

    assert may(app, "invoke", f"{IEP}/{name}", "-n", team)
    assert not may(app, "invoke", f"{IEP}/another-endpoint", "-n", team)
    assert not app.can("invoke", IEP, "-n", team)  # not every endpoint, not a listing
    assert not may(app, "invoke", f"{IEP}/{name}", "-n", other)
    assert app.grants(team) == {f"{IEP}.inference-operator.dev[{name}]": {"invoke"}}
    # The bound ServiceAccount is the one the example Pod runs as, asking for a token of
    # the chart's default audience, and it calls that endpoint at the manifests' Service.
    (pod,) = example("app/example-app.pod.yaml")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "example-app"
    (volume,) = spec["volumes"]
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        VALUES["gateway"]["auth"]["audience"])
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    (operator,) = (d for d in documents((ROOT / chart.INSTALL_YAML).read_text())
                   if d["kind"] == "Deployment"
                   and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
    public_url = build_parser().parse_args(
        operator["spec"]["template"]["spec"]["containers"][0]["args"]).gateway_public_url
    assert env["ENDPOINT_URL"] == (
        f"{public_url}/_inference/completion/{endpoint['spec']['inference_id']}")
    assert INVOKER in (EXAMPLES / "example-app.yaml").read_text()
    # The Pod is admitted where Pod Security "restricted" is enforced.
    kubectl.run("label", "namespace", team, "pod-security.kubernetes.io/enforce=restricted")
    kubectl.run("create", "--dry-run=server", "-n", team, "-f",
                str(EXAMPLES / "app" / "example-app.pod.yaml"))


# -- a real gateway as the chart's identity ---------------------------------------------


def call(url: str, token: str | None = None, body: dict | None = None):
    """(status, headers, JSON body) of a call on loopback, errors included."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(request, timeout=30) as answer:
            return answer.status, answer.headers, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


@pytest.mark.parametrize("mode", MODES)
def test_a_gateway_as_the_chart_identity_with_the_chart_flags_lets_in_whom_rbac_grants(
    mode: str, chart_service_account, make_namespaces, control_plane, kubectl: Kubectl,
    namespace: str, release: str, tmp_path: Path,
) -> None:
    fleet = mode == "fleet"
    values = [f"--set=gateway.mode={mode}"]
    # Sidecar mode: the gateway container holds the pod's only identity, the operator's.
    identity = chart_service_account(*values, identity="gateway" if fleet else "operator")
    rendered = render(*values, release=release, namespace=namespace)
    flags = [a for a in gateway_args(rendered) if a.split("=")[0] in AUTH_FLAGS]
    assert "--auth=kubernetes" in flags
    team, other = make_namespaces(2)
    kubectl.apply(example("example-app.yaml"), team)
    kubectl.run("create", "serviceaccount", "intruder", "-n", other)
    (endpoint,) = example("anthropic-completion.yaml")
    inference_id = endpoint["spec"]["inference_id"]
    key = "fake-key-auth-install-7e1f"
    record = {"inference_id": inference_id, "task_type": "completion", "service": "anthropic",
              "service_settings": {"api_key": key, "model_id": "claude-sonnet-4-5"},
              "task_settings": {"max_tokens": 64},
              OWNER_KEY: {"namespace": team, "name": endpoint["metadata"]["name"]}}
    shards = Shards(f"{release}-inference-operator-gateway-config")
    tokens = {
        "app": create_token(kubectl, team, "example-app", f"--audience={AUDIENCE}"),
        "app-api": create_token(kubectl, team, "example-app"),  # the API server's audience
        "intruder": create_token(kubectl, other, "intruder", f"--audience={AUDIENCE}"),
    }
    stack = Stack(tmp_path / "stack", api_keys=(key,), kubeconfig=control_plane.kubeconfig,
                  config_namespace=namespace, config_secret=shards.base_name)
    try:
        stack.start(stack.emulator())
        gateway = stack.gateway(*flags)
        gateway.env["KUBECONFIG"] = str(identity)
        stack.start(gateway)
        kubectl.run("patch", "secret", shards.of(inference_id), "-n", namespace, "-p",
                    json.dumps({"data": Shard(1, (record,)).encode()}))
        poll(lambda: call(f"{stack.gateway_url}/healthz")[2]["endpoints"] == 1, timeout=30,
             interval=0.2, message="the gateway never loaded the endpoint")
        url = f"{stack.gateway_url}/_inference/completion/{inference_id}"
        listing = f"{stack.gateway_url}/_inference/_all"

        status, headers, answer = call(url, body={"input": "Say hello"})
        assert (status, answer["error"]["type"]) == (401, "security_exception"), answer
        assert headers["WWW-Authenticate"] == 'Bearer realm="inference-operator"'
        assert call(url, tokens["app-api"], {"input": "Say hello"})[0] == 401
        status, _, answer = call(url, tokens["intruder"], {"input": "Say hello"})
        assert (status, answer["error"]["type"]) == (403, "security_exception"), answer
        status, _, answer = call(url, tokens["app"], {"input": "Say hello"})
        assert status == 200, answer
        assert answer["completion"][0]["result"]
        assert [e["inference_id"] for e in call(listing, tokens["app"])[2]["endpoints"]] == [
            inference_id]
        assert call(listing, tokens["intruder"])[2]["endpoints"] == []
        # The helm test pod's script, as it runs in the cluster, with a token of an
        # account granted nothing (there: the namespace's default ServiceAccount).
        token_file = tmp_path / "token"
        token_file.write_text(tokens["intruder"])
        (script,) = (c["command"][2] for c in helm_test_pod()["spec"]["containers"])
        helm_test = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
            env={"GATEWAY_URL": stack.gateway_url, "TOKEN_FILE": str(token_file),
                 "NO_PROXY": "*"}, check=False)
        assert helm_test.returncode == 0, helm_test.stdout + helm_test.stderr
        assert "serves 1 endpoint(s)" in helm_test.stdout
        assert "no token 401, this pod's token accepted" in helm_test.stdout
    finally:
        stack.stop()
        print(stack.log_tails())  # shown by pytest only when the test fails

    log = gateway.log_text()
    # Both reviews were allowed to the chart's identity, and no token was ever logged.
    assert "cannot create resource" not in log, log
    for name, token in tokens.items():
        assert token not in log, name
        assert token[-24:] not in log, name

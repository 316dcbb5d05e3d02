"""The project's image, run on the real node, holds the product and nothing of the
development kit: none of its modules import, cryptography (its dependency alone) is
absent, and the command offers only the product's subcommands."""

from __future__ import annotations

import json
import uuid

from e2e_support import finish_client

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import restricted_container

PROBE = """
import importlib.util, json
from inference_operator.cli.main import build_parser
from inference_operator.cli.options import subcommands
harness = ["inference_devkit", "cryptography", "inference_operator.controlplane",
           "inference_operator.devstack", "inference_operator.chart"]
print(json.dumps({
    "importable": [name for name in harness if importlib.util.find_spec(name) is not None],
    "commands": sorted(subcommands(build_parser())),
}))
"""


def test_the_image_cannot_import_the_harness(
    kubectl: Kubectl, project_image: tuple[str, str | None], client_namespace: str
) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    container = restricted_container("probe", project_image[0], ["-c", PROBE],
                                     command=["python"])
    kubectl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                            "containers": [container]}}, client_namespace)

    output = finish_client(kubectl, client_namespace, name)

    found = json.loads(output.strip().splitlines()[-1])
    assert found == {"importable": [], "commands": ["crd", "emulator", "gateway", "run"]}

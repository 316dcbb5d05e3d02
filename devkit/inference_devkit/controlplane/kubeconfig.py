"""Kubeconfig files for the local control plane."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from inference_devkit.controlplane.certs import CertPaths

CONTEXT = "inference-operator-controlplane"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _document(cluster: dict[str, str], user: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
    }


def _write(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def write_admin_kubeconfig(path: Path, server: str, certs: CertPaths) -> None:
    """Self-contained (data embedded), so it can be copied anywhere."""
    user = {
        "client-certificate-data": _b64(certs.admin_cert),
        "client-key-data": _b64(certs.admin_key),
    }
    cluster = {"server": server, "certificate-authority-data": _b64(certs.ca_cert)}
    _write(path, _document(cluster, user))


def write_token_kubeconfig(path: Path, like: Path, token: str) -> None:
    """A kubeconfig for the same cluster as ``like`` that authenticates with a bearer
    token (e.g. a ServiceAccount's), so code can be run with exactly that identity."""
    source = yaml.safe_load(like.read_text())
    context_name = source["current-context"]
    context = next(c for c in source["contexts"] if c["name"] == context_name)["context"]
    cluster = next(c for c in source["clusters"] if c["name"] == context["cluster"])["cluster"]
    _write(path, _document(cluster, {"token": token}))

"""The one way the operator and the gateway connect to the Kubernetes API."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def connect() -> client.ApiClient:
    """In-cluster credentials in a pod, else the current kubeconfig (as kopf does)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return client.ApiClient()
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)

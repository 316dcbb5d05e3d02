"""The one way the operator and the gateway connect to the Kubernetes API."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


class Unconfigured(Exception):
    """No credentials for the API server: not in a pod, and no usable kubeconfig."""


async def connect() -> client.ApiClient:
    """In-cluster credentials in a pod, else the current kubeconfig (as kopf does)."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config()
            return client.ApiClient()
        configuration = client.Configuration()
        await config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as error:
        raise Unconfigured(f"no Kubernetes API credentials: not in a pod, and no usable "
                           f"kubeconfig ({error})") from None
    return client.ApiClient(configuration)

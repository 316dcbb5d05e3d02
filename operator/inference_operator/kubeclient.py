"""The one way the operator and the gateway connect to the Kubernetes API."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


class Unconfigured(Exception):
    """No credentials for the API server: not in a pod, and no usable kubeconfig."""


async def connect(max_connections: int | None = None) -> client.ApiClient:
    """In-cluster credentials in a pod, else the current kubeconfig (as kopf does).
    ``max_connections``: the pool's bound (each TLS connection holds a 256 KiB read
    buffer); the client's own default otherwise."""
    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            await config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as error:
        raise Unconfigured(f"no Kubernetes API credentials: not in a pod, and no usable "
                           f"kubeconfig ({error})") from None
    if max_connections is not None:
        configuration.connection_pool_maxsize = max_connections
    return client.ApiClient(configuration)

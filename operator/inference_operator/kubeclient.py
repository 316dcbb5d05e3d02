"""The one way the operator and the gateway connect to the Kubernetes API: lightkube's
async client. Not kubernetes_asyncio: its package imports every model of the API (a third
of the operator's idle memory), and kopf imports it too whenever it is installed."""

from __future__ import annotations

import logging
import os

from lightkube import AsyncClient, ConfigError, KubeConfig

# httpx2 logs every request at INFO (method, URL, status): one line per status patch or
# review. httpcore2 traces each step at DEBUG with its arguments, and hpack every HTTP/2
# header (the Authorization too, should HTTP/2 be turned on); ``--log-level debug`` puts
# the root logger at DEBUG: none of them is wanted in a log, whatever the level.
logging.getLogger("httpx2").setLevel(logging.WARNING)
logging.getLogger("httpcore2").setLevel(logging.INFO)
logging.getLogger("hpack").setLevel(logging.INFO)


class Unconfigured(Exception):
    """No credentials for the API server: not in a pod, and no usable kubeconfig."""


def in_cluster() -> bool:
    """A pod's service account, unless a kubeconfig is named (kopf's login, controller/
    login.py, chooses the same way)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")


def kubeconfig_path() -> str:
    """The kubeconfig to use: the first of ``KUBECONFIG``, else ``~/.kube/config``."""
    return (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or "~/.kube/config"


async def connect() -> AsyncClient:
    """In-cluster credentials in a pod, else the current kubeconfig. Async like the
    client's use, though nothing here waits (the client connects lazily)."""
    try:
        config = (KubeConfig.from_service_account() if in_cluster()
                  else KubeConfig.from_file(kubeconfig_path()))
        return AsyncClient(config)
    except (ConfigError, OSError) as error:
        raise Unconfigured(f"no Kubernetes API credentials: not in a pod, and no usable "
                           f"kubeconfig ({error})") from None

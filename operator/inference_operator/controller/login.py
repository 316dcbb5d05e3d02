"""kopf's connection to the API server, with a bounded connection pool.

kopf's own session opens a new connection for every request in flight, without limit,
and each TLS connection holds a read buffer of 256 KiB (asyncio's SSL protocol). A burst
of new resources, each with its finalizer patch at the same moment, opened hundreds of
them, and that memory stayed. The credentials come from kopf's own loaders (the pod's
service account, else the kubeconfig: a token, a client certificate or a password; exec
plugins are not run), chosen as ``kubeclient.in_cluster`` chooses for the operator's own
client; only the session is ours, a kopf extension point (``kopf.AiohttpSession``)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiohttp
import kopf

from inference_operator import kubeclient
from inference_operator.controller.config import OperatorConfig
from inference_operator.controller.kube import REQUEST_CONNECTIONS

# kopf watches InferenceEndpoints and Secrets: two streams per watched namespace, or two
# cluster-wide; each holds its connection for as long as it runs.
WATCHED_RESOURCES = 2


def connection_limit(config: OperatorConfig) -> int:
    """The watches plus as many requests in flight as the operator's own client allows;
    more wait for a free connection."""
    return WATCHED_RESOURCES * max(1, len(config.namespaces)) + REQUEST_CONNECTIONS


@kopf.on.login()
async def login(memo: kopf.Memo, settings: kopf.OperatorSettings,
                **kwargs: Any) -> kopf.AiohttpSession:
    # The session must be made on the event loop; the loaders read files, off it.
    loader = (kopf.login_with_service_account if kubeclient.in_cluster()
              else kopf.login_with_kubeconfig)
    info = await asyncio.to_thread(functools.partial(loader, settings=settings, **kwargs))
    if info is None:
        raise kopf.LoginError("no Kubernetes API credentials: not in a pod, and no "
                              f"kubeconfig at {kubeclient.kubeconfig_path()}")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connection_limit(memo.config),
                                       ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),  # basic auth too, when the kubeconfig has it
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server,
                               default_namespace=info.default_namespace,
                               expiration=info.expiration, priority=info.priority)

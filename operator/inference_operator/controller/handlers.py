"""kopf registrations. Level-based by design: indices and raw events feed one reconcile
(``reconciler.Controller``); kopf's high-level cause handlers are used only for the
finalizer, and never ``on.update`` on Secrets (its diff base would copy Secret data into
an annotation)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from inference_operator.api.models import GROUP, PLURAL, VERSION
from inference_operator.controller.claims import claim_of, effective_inference_id
from inference_operator.controller.kube import SecretValue
from inference_operator.controller.reconciler import Controller
from inference_operator.controller.secrets import secret_ref

log = logging.getLogger(__name__)
RESOURCE = (GROUP, VERSION, PLURAL)
_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion",
                  "creationTimestamp", "deletionTimestamp")


def _not_deleting(body: kopf.Body, **_: Any) -> bool:
    return not body.metadata.get("deletionTimestamp")


@kopf.index(*RESOURCE)
async def endpoints(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    """What a reconcile needs, without managedFields and annotations, which can outweigh
    the rest of an object many times (this index holds every endpoint)."""
    metadata = {k: body.metadata.get(k) for k in _KEPT_METADATA if k in body.metadata}
    return {(namespace, name): {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": metadata, "spec": body.get("spec"), "status": body.get("status"),
    }}


@kopf.index(*RESOURCE, when=_not_deleting)
async def claims(body: kopf.Body, **_: Any) -> dict:
    return {effective_inference_id(body): claim_of(body)}


@kopf.index(*RESOURCE)
async def by_secret(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict | None:
    ref = secret_ref(namespace, body.get("spec") or {})
    return {(namespace, ref.name): (namespace, name)} if ref else None


@kopf.on.event(*RESOURCE)
async def endpoint_event(
    event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    controller: Controller = memo.controller
    if event.get("type") == "DELETED" or controller.is_status_echo(body):
        return
    await controller.reconcile(dict(body))


@kopf.on.delete(*RESOURCE)
async def endpoint_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    await controller.withdraw(dict(body))


@kopf.on.event("", "v1", "secrets")
async def secret_event(
    event: dict, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any,
) -> None:
    # Every Secret's event, referenced or not: the controller keeps the referenced ones
    # and drops any copy of the others (a reference may come back later).
    controller: Controller = memo.controller
    value = None if event.get("type") == "DELETED" else SecretValue(
        dict(body.get("data") or {}), body["metadata"]["resourceVersion"])
    controller.secret_changed(namespace, name, value)

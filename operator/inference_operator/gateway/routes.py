"""Map ``/_inference/...`` paths and methods to actions, as Elasticsearch's route table
does: one segment is an id, two are task type and id, and ``_update``/``_stream`` are
suffixes (ids cannot start with ``_``, so nothing is ambiguous)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from inference_operator.gateway import errors


class Action(StrEnum):
    LIST = "list"
    GET = "get"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    INFER = "infer"
    STREAM = "stream"
    OPENAPI = "openapi"


# Only the admin listener performs these.
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE})
PREFIX = "/_inference"


@dataclass(frozen=True)
class Route:
    action: Action
    inference_id: str | None = None
    task_type: str | None = None


def _methods(segments: list[str]) -> tuple[dict[str, Action], str | None, str | None]:
    """The actions a path offers per method, with the (id, task type) it names."""
    match segments:
        case [] | ["_all" | "*"]:
            return {"GET": Action.LIST}, None, None
        case ["_openapi"]:  # ids never start with "_", so this cannot shadow one
            return {"GET": Action.OPENAPI}, None, None
        case [task_type, "_all" | "*"]:
            return {"GET": Action.LIST}, None, task_type
        case [inference_id, "_update"] | [_, inference_id, "_update"]:
            task_type = segments[0] if len(segments) == 3 else None
            return {"PUT": Action.UPDATE, "POST": Action.UPDATE}, inference_id, task_type
        case [inference_id, "_stream"] | [_, inference_id, "_stream"]:
            task_type = segments[0] if len(segments) == 3 else None
            return {"POST": Action.STREAM}, inference_id, task_type
        case [inference_id] | [_, inference_id]:
            task_type = segments[0] if len(segments) == 2 else None
            return ({"GET": Action.GET, "PUT": Action.CREATE, "DELETE": Action.DELETE,
                     "POST": Action.INFER}, inference_id, task_type)
    return {}, None, None


def match(method: str, raw_path: str, *, admin: bool) -> Route:
    """``raw_path``: as sent, still percent-encoded. Split first, then each segment
    decoded, as Elasticsearch's REST layer does: an encoded slash stays in its segment."""
    path = unquote(raw_path)  # for the messages
    if raw_path != PREFIX and not raw_path.startswith(PREFIX + "/"):
        raise errors.no_handler(path, method)
    segments = [unquote(s) for s in raw_path[len(PREFIX):].split("/") if s]
    offered, inference_id, task_type = _methods(segments)
    if not offered:
        raise errors.no_handler(path, method)
    if not admin:
        offered = {m: a for m, a in offered.items() if a not in WRITES}
    action = offered.get("GET" if method == "HEAD" else method)
    if action is None:
        hint = "" if admin else "; the public listener accepts no writes, use the admin listener"
        raise errors.method_not_allowed(path, method, sorted(offered), hint)
    return Route(action, inference_id, task_type)

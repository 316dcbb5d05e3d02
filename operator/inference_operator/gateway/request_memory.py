"""The bytes that inference requests hold while they are read, queued or in flight: one
budget for the gateway and a share of it per endpoint, so its memory is bounded by
configuration, not by demand, and one endpoint cannot take it all.

A request reserves before its body is read (its Content-Length, or the body limit when
it has none), then resizes to what it keeps while it waits and is sent: the encoded
upstream request. What does not fit is refused at once with 429 and ``Retry-After``, in
Elasticsearch's shape for a full queue."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections import defaultdict
from pathlib import Path
from types import TracebackType

from inference_operator.gateway.errors import ESError

MIB = 1024 * 1024
# The container's memory limit, cgroup v2 then v1 ("max", or v1's huge number: none).
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),
                  Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
# Without a limit, sized as for the chart's default (gateway.resources.limits.memory).
ASSUMED_MEMORY_LIMIT = 512 * MIB
# What the rest of the process needs besides the requests' bytes: the interpreter and
# libraries, one request being parsed (its JSON as objects, several times its size), the
# allocator's slack. A quarter for requests leaves three quarters for that.
LIMIT_FRACTION = 0.25
DEFAULT_ENDPOINT_SHARE = 0.25


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# Blocks from this size on get a mapping of their own (glibc's default threshold).
_MMAP_THRESHOLD = 128 * 1024


def give_back_large_blocks() -> None:
    """Have every large block (a request body, an upstream request) mapped on its own and
    given back to the system when freed. glibc raises that threshold to the largest block
    freed so far, after which megabyte bodies come from the heap and what they leave
    behind stays resident: up to twice the budget once it was full. Setting the threshold
    keeps it fixed. Nothing to do where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def memory_limit() -> int | None:
    """The memory limit of this process's cgroup (a container's ``limits.memory``), in
    bytes; None without one."""
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "none" with ~2**63
            return int(text)
        return None
    return None


def default_budget(limit: int | None) -> int:
    """The budget for a process whose memory limit is ``limit`` bytes (None: none)."""
    return int((limit or ASSUMED_MEMORY_LIMIT) * LIMIT_FRACTION)


class RequestMemory:
    def __init__(self, budget: int, endpoint_share: float = DEFAULT_ENDPOINT_SHARE) -> None:
        if budget < 1 or not 0 < endpoint_share <= 1:
            raise ValueError("the request memory budget must be positive and the endpoint "
                             "share a fraction in (0, 1]")
        self.budget = budget
        self.per_endpoint = max(1, int(budget * endpoint_share))
        self.held = 0
        self._by_endpoint: defaultdict[str, int] = defaultdict(int)

    def reserve(self, inference_id: str, size: int, retry_after: int = 1) -> Held:
        """``size`` bytes for a request to ``inference_id``; ESError 429 if they do not
        fit. ``retry_after``: seconds until the endpoint's queue moves (its rate's
        interval)."""
        held = Held(self, inference_id, retry_after)
        held.resize(size)
        return held

    def _change(self, held: Held, size: int) -> None:
        grow = size - held.size
        if grow > 0:
            endpoint = self._by_endpoint[held.inference_id]
            if endpoint + grow > self.per_endpoint:
                raise _refused(held, "the requests queued or in flight for it hold "
                               f"[{endpoint}] bytes of its share of [{self.per_endpoint}]",
                               grow, held.retry_after)
            if self.held + grow > self.budget:
                raise _refused(held, f"the requests queued or in flight hold [{self.held}] "
                               f"bytes of the gateway's budget of [{self.budget}]", grow, 1)
        self.held += grow
        self._by_endpoint[held.inference_id] += grow
        if not self._by_endpoint[held.inference_id]:
            del self._by_endpoint[held.inference_id]
        held.size = size

    def endpoint_held(self, inference_id: str) -> int:
        return self._by_endpoint.get(inference_id, 0)


class Held:
    """One request's reservation; released when its ``with`` block ends."""

    def __init__(self, memory: RequestMemory, inference_id: str, retry_after: int) -> None:
        self._memory = memory
        self.inference_id = inference_id
        self.retry_after = retry_after
        self.size = 0

    def resize(self, size: int) -> None:
        """Hold ``size`` bytes from now on: less never fails, more may (ESError 429)."""
        self._memory._change(self, size)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.resize(0)


def _refused(held: Held, why: str, needed: int, retry_after: int) -> ESError:
    return ESError(
        429, "es_rejected_execution_exception",
        f"Failed to execute task for inference id [{held.inference_id}] because it needs "
        f"[{needed}] more bytes of request memory and {why}",
        headers={"Retry-After": str(retry_after)})

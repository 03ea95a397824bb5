"""Short calls to whichever worker can answer them, beside the turns: the sessions API's
ListSessions / GetSession / DeleteSession and the Responses API's FindResponse."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError, api_error_from_call, refused
from gateway_edge.placement import candidates
from gateway_edge.worker import NO_ANSWER
from gateway_edge.worker_pool import WorkerPool
from services import tracing

log = logging.getLogger("clawgate.edge.workers")


# Calls that change nothing, or nothing more when made twice: one that got no answer in time
# (it may have run) is made again on the next worker. Any other (a tool's side effects, a
# compaction's summary calls, an embedding's usage record) runs at most once, and its failure
# is the answer.
ASKED_AGAIN = frozenset(
    {
        "ListSessions",
        "GetSession",
        "DeleteSession",
        "FindResponse",
        "GetUsage",
        "GetRun",
        "ListRuns",
    }
)


async def ask(
    pool: WorkerPool,
    method: str,
    request: Any,
    session_key: str = "",
    call_seconds: float | None = None,
    refusal: Callable[[grpc.StatusCode, str | None], ApiError] = api_error_from_call,
    sticky: bool = True,
) -> Any:
    """One call of a worker RPC on the session's worker (`sticky`; else the least busy); a
    refusal (NOT_FOUND, INVALID_ARGUMENT, a wrong secret) is the answer, said by `refusal`. A
    call in ASKED_AGAIN that got no answer moves on to the next usable worker."""
    failure: grpc.aio.AioRpcError | None = None
    workers = candidates(pool.workers, session_key, sticky)
    if method not in ASKED_AGAIN:
        workers = workers[:1]
    for worker in workers:
        attributes = {**worker.span_attributes, "rpc.method": method}
        with tracing.span(f"{tracing.AGENT_SERVICE}/{method}", "client", attributes) as call:
            metadata = pool.call_metadata
            if tracing.active() and (context := call.traceparent() or tracing.traceparent()):
                metadata = (*metadata, ("traceparent", context))
            try:
                return await getattr(worker.agents, method)(
                    request, metadata=metadata, timeout=call_seconds or pool.call_timeout * 5
                )
            except grpc.aio.AioRpcError as error:
                call.fail(error.details() or error.code().name, error.code().name)
                if error.code() not in NO_ANSWER:
                    raise refusal(error.code(), error.details()) from None
                failure = error
    if failure is None:
        raise refused(pb.ERROR_CODE_UNAVAILABLE, None)
    raise api_error_from_call(failure.code(), failure.details())


async def find_response(
    pool: WorkerPool, response_id: str, caller: pb.Caller | None
) -> pb.FindResponseResponse | None:
    """Where a stored response id belongs (None when unknown, or in a session the caller may
    not reach)."""
    request = pb.FindResponseRequest(response_id=response_id, caller=caller)
    found: pb.FindResponseResponse | None = await ask_each(pool, "FindResponse", request)
    return found


async def ask_each(pool: WorkerPool, method: str, request: Any) -> Any | None:
    """A lookup asked of the usable workers in turn (they may keep separate stores) until one
    knows it; None when every one that answered said NOT_FOUND."""
    answered = False
    for worker in pool.workers:
        if not worker.usable:
            continue
        try:
            return await getattr(worker.agents, method)(
                request, metadata=pool.call_metadata, timeout=pool.call_timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                answered = True
                continue
            log.warning("worker %s: %s failed: %s", worker.address, method, error.code().name)
    if answered:
        return None
    raise refused(pb.ERROR_CODE_UNAVAILABLE, None)

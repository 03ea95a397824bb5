"""Which worker RPCs move to the next worker when the first gives no answer (issue 44): calls
that change nothing do; a tool call or a compaction, which may have run, never runs twice."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError
from gateway_edge.worker_calls import ask
from gateway_edge.worker_pool import WorkerPool


class SlowStub:
    """A worker's stub whose every call ends in DEADLINE_EXCEEDED after it was made."""

    def __init__(self, calls: list[str], address: str) -> None:
        self._calls, self._address = calls, address

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, **options: Any) -> Any:
            self._calls.append(f"{self._address} {method}")
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "slow"
            )

        return call


@pytest.fixture
async def pool() -> Any:
    pool = WorkerPool(["127.0.0.1:1", "127.0.0.1:2"])
    await pool.open()
    yield pool
    await pool.close()


@pytest.mark.parametrize(
    ("method", "request_", "tried"),
    [
        ("InvokeTool", pb.InvokeToolRequest(agent_id="main", tool="t"), 1),
        ("CompactSession", pb.CompactSessionRequest(session_key="k"), 1),
        ("GetSession", pb.GetSessionRequest(session_key="k"), 2),
        ("ListSessions", pb.ListSessionsRequest(), 2),
        ("Embed", pb.EmbedRequest(inputs=["x"]), 1),  # its usage record is not made twice
        ("GetUsage", pb.GetUsageRequest(), 2),
    ],
)
async def test_a_call_that_may_have_run_is_never_made_twice(
    pool: WorkerPool, method: str, request_: Any, tried: int
) -> None:
    calls: list[str] = []
    for worker in pool.workers:
        worker.serving = True
        worker.agents = SlowStub(calls, worker.address)  # type: ignore[assignment]
    with pytest.raises(ApiError) as failed:
        await ask(pool, method, request_, "k", call_seconds=1)
    assert len(calls) == tried, calls
    assert failed.value.status in (503, 504)

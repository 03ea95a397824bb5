"""`GET /v1/runs/{runId}` and `GET /v1/runs?session_key=…`: the runs webhooks started (our
addition to OpenClaw's surface). Reading needs operator.read; a caller without operator.admin
sees only runs made for them (a webhook's runs are the gateway owner's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError
from gateway_edge.json_responses import json_response
from gateway_edge.principal import READ, Principal
from gateway_edge.state import Admitted, admitted
from gateway_edge.worker_calls import ask, ask_each

router = APIRouter()
_STATUSES = {
    pb.RUN_STATUS_QUEUED: "queued",
    pb.RUN_STATUS_RUNNING: "running",
    pb.RUN_STATUS_COMPLETED: "completed",
    pb.RUN_STATUS_FAILED: "failed",
}


def run_object(run: pb.Run) -> dict[str, Any]:
    return {
        "object": "run",
        "id": run.id,
        "status": _STATUSES.get(run.status, "queued"),
        "agent": run.agent_id,
        "session_key": run.session_key,
        "hook": run.hook,
        "name": run.name,
        "created_at": run.created_at,
        "finished_at": run.finished_at or None,
        "error": run.error or None,
    }


def _reaches(principal: Principal, run: pb.Run) -> bool:
    return principal.admin or run.owner == principal.identity


def _not_found(run_id: str) -> ApiError:
    return ApiError(404, f"No run {run_id!r}.", "invalid_request_error", "run_id")


@router.get("/v1/runs/{run_id}")
async def get_run(run_id: str, call: Annotated[Admitted, Depends(admitted)]) -> Response:
    state, principal, _ = call
    principal.require(READ)
    found = await ask_each(state.workers, "GetRun", pb.GetRunRequest(run_id=run_id))
    if found is None or not _reaches(principal, found.run):
        raise _not_found(run_id)
    return json_response(run_object(found.run))


@router.get("/v1/runs")
async def list_runs(
    call: Annotated[Admitted, Depends(admitted)],
    session_key: Annotated[str, Query(min_length=1)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    state, principal, _ = call
    principal.require(READ)
    request = pb.ListRunsRequest(session_key=session_key, limit=limit)
    listed = await ask(state.workers, "ListRuns", request, session_key)
    runs = [run_object(run) for run in listed.runs if _reaches(principal, run)]
    return json_response({"object": "list", "data": runs})

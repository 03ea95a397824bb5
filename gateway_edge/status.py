"""GET /status: the edge's view of its workers (for `clawgate status`); same auth as the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway_edge.responses import json_response
from gateway_edge.state import EdgeState, authorized

router = APIRouter()


@router.get("/status")
async def edge_status(state: Annotated[EdgeState, Depends(authorized)]) -> Response:
    workers = [
        {
            "address": worker.address,
            "serving": worker.serving,
            "answering": worker.answering,
            "turns_in_flight": worker.in_flight,
        }
        for worker in state.workers.workers
    ]
    return json_response({"ready": state.workers.any_serving(), "workers": workers})

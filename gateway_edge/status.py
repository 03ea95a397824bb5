"""GET /status: the edge's view of its workers (for `clawgate status`); same auth as the API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway_edge.addresses import client_ip
from gateway_edge.responses import json_response
from gateway_edge.state import EdgeState

router = APIRouter()


@router.get("/status")
async def edge_status(request: Request) -> Response:
    state: EdgeState = request.app.state.edge
    state.access.check(client_ip(request.client), request.headers.get("authorization"))
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

"""GET /healthz (the process is alive) and GET /readyz (a worker is serving); no auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway_edge.state import EdgeState

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state: EdgeState = request.app.state.edge
    if state.workers.any_serving():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "no worker is serving"}, status_code=503)

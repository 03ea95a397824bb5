"""GET /status: the edge's view of its workers and their tool servers (for `clawgate status`);
same auth as the API."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway_edge.json_responses import json_response
from gateway_edge.state import EdgeState, authorized

router = APIRouter()


@router.get("/status")
async def edge_status(state: Annotated[EdgeState, Depends(authorized)]) -> Response:
    pool = state.workers
    known = pool.workers
    listings = await asyncio.gather(*(pool.listing_of(worker) for worker in known))
    workers = [
        {
            "address": worker.address,
            "serving": worker.serving,
            "answering": worker.answering,
            "turns_in_flight": worker.in_flight,
            "tool_servers": [
                {
                    "name": server.name,
                    "state": server.state,
                    "problem": server.problem,
                    "tools": server.tools,
                }
                for server in (listing.tool_servers if listing is not None else ())
            ],
            "agents": [
                {
                    "id": agent.id,
                    "model": agent.model,
                    "context_window": agent.context_window or None,
                }
                for agent in (listing.agents if listing is not None else ())
            ],
        }
        for worker, listing in zip(known, listings, strict=True)
    ]
    return json_response({"ready": pool.any_serving(), "workers": workers})

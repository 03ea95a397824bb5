"""GET /v1/models and GET /v1/models/{id}: the agents, in the forms `model` accepts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway_edge.errors import ApiError
from gateway_edge.json_responses import json_response
from gateway_edge.state import EdgeState, authorized

router = APIRouter()


def model_ids(state: EdgeState) -> list[str]:
    return [
        "openclaw",
        "openclaw/default",
        *(f"openclaw/{agent_id}" for agent_id in sorted(state.workers.agents.ids)),
    ]


def model_card(model_id: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "openclaw"}


@router.get("/v1/models")
async def list_models(state: Annotated[EdgeState, Depends(authorized)]) -> Response:
    cards = [model_card(model_id, state.started_at) for model_id in model_ids(state)]
    return json_response({"object": "list", "data": cards})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(
    model_id: str, state: Annotated[EdgeState, Depends(authorized)]
) -> Response:
    if model_id not in model_ids(state):
        message = f"The model '{model_id}' does not exist."
        raise ApiError(404, message, "invalid_request_error", "model", "model_not_found")
    return json_response(model_card(model_id, state.started_at))

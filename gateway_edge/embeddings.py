"""`POST /v1/embeddings`, as OpenClaw serves it beside chat and Responses: `model` is an agent
target, the agent's `embeddingModel` (or its own model) embeds, `x-openclaw-model` names another
configured model. One worker call carries every input (`Embed`); the answer is OpenAI's shape,
floats or base64 (little-endian float32, as OpenAI's)."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.asgi import read_json_object
from gateway_edge.errors import bad_request
from gateway_edge.json_responses import json_response
from gateway_edge.principal import ADMIN, WRITE
from gateway_edge.state import Admitted, admitted
from gateway_edge.turn_setup import configured_model
from gateway_edge.worker_calls import ask

router = APIRouter()
MAX_INPUTS = 2048  # OpenAI's limit per request
# A batch of 2,048 inputs on the embedded model takes a while on two cores.
EMBED_SECONDS = 600.0


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad_request(
            "Invalid 'input': expected a string or a non-empty array of strings.", "input"
        )
    if len(value) > MAX_INPUTS:
        raise bad_request(
            f"Invalid 'input': at most {MAX_INPUTS} inputs per request, got {len(value)}.",
            "input",
            "array_above_max_length",
        )
    for index, item in enumerate(value):
        if isinstance(item, int) or (isinstance(item, list) and item):
            raise bad_request(
                "Invalid 'input': token arrays are not supported here; send text.", "input"
            )
        if not isinstance(item, str) or not item:
            raise bad_request(f"Invalid 'input[{index}]': expected a non-empty string.", "input")
    return value


def _encoded(values: Any, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


@router.post("/v1/embeddings")
async def create_embeddings(
    request: Request, call: Annotated[Admitted, Depends(admitted)]
) -> Response:
    state, principal, headers = call
    principal.require(WRITE)
    limit = state.config.gateway.http.endpoints.chat_completions.max_body_bytes
    document = await read_json_object(request.receive, headers, limit)
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("Missing required parameter: 'model'.", "model")
    if "input" not in document:
        raise bad_request("Missing required parameter: 'input'.", "input")
    inputs = _inputs(document["input"])
    encoding = document.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise bad_request(
            "Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format"
        )
    dimensions = document.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise bad_request("Invalid 'dimensions': expected a positive integer.", "dimensions")
    user = document.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("Invalid 'user': expected a string.", "user")
    agents = state.workers.agents
    agent_id = resolve_agent(
        model, request.headers.get("x-openclaw-agent-id"), agents.ids, agents.default_id
    )
    other_model = request.headers.get("x-openclaw-model")
    if other_model is not None:
        principal.require(ADMIN)
        other_model = configured_model(other_model, agents.providers)
    admission = await state.limits.admit(principal.counted_as, agent_id)
    try:
        answer = await ask(
            state.workers,
            "Embed",
            pb.EmbedRequest(
                agent_id=agent_id,
                model=other_model or "",
                inputs=inputs,
                dimensions=dimensions or 0,
                caller=principal.caller(),
            ),
            call_seconds=EMBED_SECONDS,
        )
        await admission.finish(answer.prompt_tokens, answer.cost_usd)
    finally:
        await admission.release()
    return json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": _encoded(row.values, encoding)}
                for index, row in enumerate(answer.embeddings)
            ],
            "model": model,
            "usage": {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens},
        },
        {name.decode(): value.decode() for name, value in admission.headers},
    )

"""`POST /v1/responses` (OpenResponses): the request is validated in its own shape
(responses_request.py) and made a turn (responses_turn.py); the answer is a `response` object
or its event stream (responses_encoder.py). `previous_response_id` continues the session
that response was in."""

from __future__ import annotations

import time
from typing import Any

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.responses_encoder import ResponsesEncoder
from gateway_edge.dialects.responses_request import parse_responses_request
from gateway_edge.dialects.responses_turn import responses_turn
from gateway_edge.errors import ApiError
from gateway_edge.input_sources import InputSources
from gateway_edge.principal import Principal
from gateway_edge.serving import AdaptedRequest
from gateway_edge.state import EdgeState
from gateway_edge.worker_calls import find_response
from services.config import ClawgateConfig

PATH = "/v1/responses"


class Responses:
    path = PATH
    items_field = "input"

    def __init__(self, config: ClawgateConfig) -> None:
        endpoint = config.gateway.http.endpoints.responses
        self.max_body_bytes = endpoint.max_body_bytes
        self.max_items = endpoint.max_messages
        self._sources = endpoint

    def parse(self, document: Any) -> AdaptedRequest[dict[str, Any]]:
        """The native request is the body as it came: the answer echoes its fields."""
        request = parse_responses_request(document)
        turn = responses_turn(request, InputSources(self._sources))
        adapted = AdaptedRequest(document, turn, stream=bool(request.stream))
        adapted.previous_response_id = request.previous_response_id
        return adapted

    async def resolve(
        self, request: AdaptedRequest[dict[str, Any]], state: EdgeState, principal: Principal
    ) -> None:
        previous = request.previous_response_id
        if previous is None:
            return
        request.continues = await find_response(state.workers, previous, principal.caller())
        if request.continues is None:
            raise ApiError(
                404,
                f"No response with id {previous!r} was found.",
                "invalid_request_error",
                "previous_response_id",
                "response_not_found",
            )

    def encoder(
        self, request: AdaptedRequest[dict[str, Any]], turn: pb.RunTurnRequest
    ) -> ResponsesEncoder:
        model = request.turn.model or "openclaw"
        encoder = ResponsesEncoder(int(time.time()), model, request.native)
        turn.response_id = encoder.id  # stored with the turn, for the next one to continue
        return encoder

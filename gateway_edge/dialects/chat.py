"""`POST /v1/chat/completions`: the request is already chat-shaped; the answer is a
`chat.completion` or its `chat.completion.chunk` stream (chat_encoder.py)."""

from __future__ import annotations

import time
from typing import Any

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.chat_encoder import ChatEncoder
from gateway_edge.dialects.chat_request import ChatCompletionRequest, parse_chat_request
from gateway_edge.dialects.chat_turn import chat_turn
from gateway_edge.input_sources import InputSources
from gateway_edge.principal import Principal
from gateway_edge.serving import AdaptedRequest
from gateway_edge.state import EdgeState
from services.config import ClawgateConfig
from services.ids import random_hex

PATH = "/v1/chat/completions"


class ChatCompletions:
    path = PATH
    items_field = "messages"

    def __init__(self, config: ClawgateConfig) -> None:
        endpoint = config.gateway.http.endpoints.chat_completions
        self.max_body_bytes = endpoint.max_body_bytes
        self.max_items = endpoint.max_messages
        self._sources = endpoint

    def parse(self, document: Any) -> AdaptedRequest[ChatCompletionRequest]:
        chat = parse_chat_request(document)
        turn = chat_turn(chat, InputSources(self._sources))
        return AdaptedRequest(chat, turn, stream=bool(chat.stream))

    async def resolve(
        self, request: AdaptedRequest[ChatCompletionRequest], state: EdgeState, principal: Principal
    ) -> None:
        return None  # a chat request names nothing stored

    def encoder(
        self, request: AdaptedRequest[ChatCompletionRequest], turn: pb.RunTurnRequest
    ) -> ChatEncoder:
        chat = request.native
        return ChatEncoder(
            f"chatcmpl_{random_hex()}",
            int(time.time()),
            chat.model or "openclaw",
            include_usage=bool(chat.stream_options and chat.stream_options.include_usage),
            with_logprobs=bool(chat.logprobs),
        )

"""POST /v1/responses (OpenResponses) as a pure ASGI app: the same auth, agents, sessions and
worker turns as chat completions; the request is said again as a chat request
(responses_request.py) and the answer is shaped by responses_encoder.py."""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.addresses import client_ip
from gateway_edge.asgi import (
    JSON_HEADERS,
    STREAM_HEADERS,
    answered_or_refused,
    body_part,
    cancelled_on_disconnect,
    read_json,
    send_bytes,
    send_error,
)
from gateway_edge.chat_completions import check_item_count
from gateway_edge.errors import ApiError
from gateway_edge.responses_encoder import ResponsesEncoder
from gateway_edge.responses_request import as_chat_request, parse_responses_request
from gateway_edge.sse import DONE, KEEP_ALIVE
from gateway_edge.state import EdgeState
from gateway_edge.turn import Turn
from gateway_edge.turn_setup import SESSION_KEY_HEADER_BYTES, header_value, prepare_turn
from gateway_edge.worker_calls import find_response

PATH = "/v1/responses"


class ResponsesEndpoint:
    def __init__(self, state: EdgeState) -> None:
        self._state = state
        endpoint = state.config.gateway.http.endpoints.responses
        self._max_body = endpoint.max_body_bytes
        self._max_items = endpoint.max_messages
        self._keep_alive = state.config.gateway.keep_alive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_error(send, ApiError(405, "Method not allowed.", headers={"allow": "POST"}))
            return
        await answered_or_refused(lambda tracked: self._handle(scope, receive, tracked), send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._state
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        state.access.check(client_ip(scope.get("client")), header_value(headers, b"authorization"))
        document = await read_json(receive, headers, self._max_body)
        check_item_count(document, "input", self._max_items)
        request = parse_responses_request(document)
        chat = as_chat_request(request)
        continues = None
        if request.previous_response_id is not None:
            continues = await find_response(state.workers, request.previous_response_id)
            if continues is None:
                raise ApiError(
                    404,
                    f"No response with id {request.previous_response_id!r} was found.",
                    "invalid_request_error",
                    "previous_response_id",
                    "response_not_found",
                )
        prepared = prepare_turn(state, scope, headers, chat, continues)
        encoder = ResponsesEncoder(int(time.time()), request.model or "openclaw", document)
        prepared.request.response_id = encoder.id  # stored with the turn, for the next one
        session_header = (SESSION_KEY_HEADER_BYTES, prepared.session.key.encode())
        async with cancelled_on_disconnect(receive):
            starting = state.workers.start_turn(
                prepared.request, sticky=prepared.session.named, whole_answer=not request.stream
            )
            async with await starting as turn:
                if request.stream:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [*STREAM_HEADERS, session_header],
                        }
                    )
                    await self._stream(send, turn, encoder)
                else:
                    answer = await self._complete(turn, encoder)
                    await send_bytes(send, 200, [*JSON_HEADERS, session_header], answer)

    async def _stream(self, send: Send, turn: Turn, encoder: ResponsesEncoder) -> None:
        await send(body_part(encoder.start()))  # type: ignore[arg-type]
        try:
            finished = False
            while not finished:
                batch = await turn.next_batch(self._keep_alive)
                if batch is None:
                    await send(body_part(KEEP_ALIVE))  # type: ignore[arg-type]
                    continue
                frames: list[bytes] = []
                for event in batch:
                    if isinstance(event, pb.TextDelta):
                        frames.append(encoder.delta(event.text))
                    elif isinstance(event, pb.ToolCallDelta):
                        frames.append(encoder.tool_call(event))
                    elif isinstance(event, pb.ToolRunStarted):
                        frames.append(KEEP_ALIVE)  # the agent's own tool runs
                    elif isinstance(event, pb.TurnFinished):
                        finished = True
                        self._state.metrics.completion_tokens.inc(event.usage.completion_tokens)
                        frames.append(encoder.finish(event))
                if frames:
                    await send(body_part(b"".join(frames)))  # type: ignore[arg-type]
        except ApiError as error:
            await send(body_part(encoder.failed(error.message)))  # type: ignore[arg-type]
        await send({"type": "http.response.body", "body": DONE})

    async def _complete(self, turn: Turn, encoder: ResponsesEncoder) -> bytes:
        parts: list[str] = []
        turn.read_whole()
        while True:
            batch = await turn.next_batch()
            assert batch is not None  # no wait_seconds: it waits for events
            for event in batch:
                if isinstance(event, pb.TextDelta):
                    parts.append(event.text)
                elif isinstance(event, pb.TurnFinished):
                    self._state.metrics.completion_tokens.inc(event.usage.completion_tokens)
                    return encoder.whole("".join(parts), event)

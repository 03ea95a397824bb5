"""POST /v1/chat/completions as a pure ASGI app: auth, body, agent and session, one worker turn,
JSON or SSE.

This is the hot path, so it skips the framework's routing, dependency injection and response
classes: it reads the body, sends pre-encoded bytes (chat_encoder.py), and cancels the turn when
its client goes away (asgi.py).
"""

from __future__ import annotations

import logging
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
from gateway_edge.chat_encoder import ChatEncoder
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.observability import RequestRecord
from gateway_edge.protocol import ChatCompletionRequest, parse_chat_request
from gateway_edge.sse import DONE, KEEP_ALIVE, error_frame
from gateway_edge.state import EdgeState
from gateway_edge.turn import Turn
from gateway_edge.turn_setup import SESSION_KEY_HEADER_BYTES, header_value, prepare_turn
from gateway_edge.wire import logprobs_json
from services.ids import random_hex

log = logging.getLogger("clawgate.edge")
PATH = "/v1/chat/completions"


def check_item_count(document: object, field: str, limit: int) -> None:
    """Refuses a request whose `field` array (chat `messages`, Responses `input`) holds more
    than `limit` items before validating them one by one (400,000 held the event loop for
    seconds, and the worker for minutes)."""
    if isinstance(document, dict):
        items = document.get(field)
        if isinstance(items, list) and len(items) > limit:
            raise bad_request(
                f"Invalid '{field}': array too long. Expected an array with maximum length"
                f" {limit} (maxMessages), but got an array with length {len(items)} instead.",
                field,
                "array_above_max_length",
            )


class ChatCompletionsEndpoint:
    def __init__(self, state: EdgeState) -> None:
        self._state = state
        endpoint = state.config.gateway.http.endpoints.chat_completions
        self._max_body = endpoint.max_body_bytes
        self._max_messages = endpoint.max_messages
        self._keep_alive = state.config.gateway.keep_alive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_error(send, ApiError(405, "Method not allowed.", headers={"allow": "POST"}))
            return
        await answered_or_refused(lambda tracked: self._handle(scope, receive, tracked), send)

    async def _read_request(
        self, headers: dict[bytes, bytes], receive: Receive
    ) -> ChatCompletionRequest:
        document = await read_json(receive, headers, self._max_body)
        check_item_count(document, "messages", self._max_messages)
        return parse_chat_request(document)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._state
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        state.access.check(client_ip(scope.get("client")), header_value(headers, b"authorization"))
        chat = await self._read_request(headers, receive)
        prepared = prepare_turn(state, scope, headers, chat)
        turn_request, session, record = prepared.request, prepared.session, prepared.record
        encoder = ChatEncoder(
            f"chatcmpl_{random_hex()}", int(time.time()), chat.model or "openclaw"
        )
        session_header = (SESSION_KEY_HEADER_BYTES, session.key.encode())
        async with cancelled_on_disconnect(receive):
            # A named session sticks to its worker; a fresh one goes where there is most room.
            starting = state.workers.start_turn(
                turn_request, sticky=session.named, whole_answer=not chat.stream
            )
            async with await starting as turn:
                if chat.stream:
                    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
                    headers_out = [*STREAM_HEADERS, session_header]
                    await self._stream(
                        send, headers_out, turn, encoder, record, include_usage, chat.logprobs
                    )
                else:
                    answer = await self._complete(turn, encoder, record, bool(chat.logprobs))
                    await send_bytes(send, 200, [*JSON_HEADERS, session_header], answer)

    async def _stream(
        self,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        turn: Turn,
        encoder: ChatEncoder,
        record: RequestRecord,
        include_usage: bool,
        with_logprobs: bool | None,
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        streams_open = self._state.metrics.streams_open
        streams_open.inc()
        try:
            await send(body_part(encoder.role()))  # type: ignore[arg-type]
            # Until the finish: a failure that came with the last text raises on the next read.
            finished = False
            while not finished:
                batch = await turn.next_batch(self._keep_alive)
                if batch is None:
                    await send(body_part(KEEP_ALIVE))  # type: ignore[arg-type]
                    continue
                frames: list[bytes] = []  # what arrived together goes out in one write
                for event in batch:
                    if isinstance(event, pb.ToolCallDelta):
                        record.first_token()
                        frames.append(encoder.tool_call(event))
                    elif isinstance(event, pb.TextDelta):
                        record.first_token()
                        if with_logprobs and event.logprobs:
                            frames.append(encoder.delta_with_logprobs(event.text, event.logprobs))
                        else:
                            frames.append(encoder.delta(event.text))
                    elif isinstance(event, pb.ToolRunStarted):
                        frames.append(KEEP_ALIVE)  # the agent's own tool runs: not the client's
                    elif isinstance(event, pb.TurnFinished):
                        finished = True
                        self._count_tokens(event)
                        frames.append(encoder.finish(event))
                        if include_usage:
                            frames.append(encoder.usage(event))
                if frames:
                    await send(body_part(b"".join(frames)))  # type: ignore[arg-type]
        except ApiError as error:
            log.warning("turn failed after the stream started: %s", error.message)
            await send(body_part(error_frame(error)))  # type: ignore[arg-type]
        finally:
            streams_open.dec()
        await send({"type": "http.response.body", "body": DONE})

    async def _complete(
        self, turn: Turn, encoder: ChatEncoder, record: RequestRecord, with_logprobs: bool
    ) -> bytes:
        parts: list[str] = []
        scores: list[dict[str, object]] = []
        turn.read_whole()
        while True:
            batch = await turn.next_batch()
            assert batch is not None  # no wait_seconds: it waits for events
            for event in batch:
                if isinstance(event, pb.TextDelta):
                    if not parts:
                        record.first_token()
                    parts.append(event.text)
                    if with_logprobs and event.logprobs:  # reading it costs: only when asked
                        scores += logprobs_json(event.logprobs)
                elif isinstance(event, pb.TurnFinished):  # it has the tool calls whole
                    self._count_tokens(event)
                    return encoder.completion(
                        "".join(parts), event, scores if with_logprobs else None
                    )

    def _count_tokens(self, finished: pb.TurnFinished) -> None:
        self._state.metrics.completion_tokens.inc(finished.usage.completion_tokens)

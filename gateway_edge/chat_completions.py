"""POST /v1/chat/completions: auth, body, agent and session, one worker turn, JSON or SSE."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from gateway_edge.addresses import client_ip
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.disconnect import ClientDisconnected, unless_disconnected
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.metrics import EdgeMetrics
from gateway_edge.observability import RequestRecord, record_of
from gateway_edge.protocol import ChatCompletionRequest, parse_chat_request
from gateway_edge.sessions import SESSION_KEY_HEADER, session_key_for
from gateway_edge.sse import DONE, KEEP_ALIVE, ChunkEncoder, error_frame, with_keep_alive
from gateway_edge.state import EdgeState
from gateway_edge.turn_input import turn_request_for
from gateway_edge.worker_pool import TurnCall
from services.grpc_gen.clawgate.agent.v1 import agent_service_pb2 as pb
from services.logging import request_id_var

log = logging.getLogger("clawgate.edge")
router = APIRouter()
_FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: "stop",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
    pb.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; nobody receives it, logs show it
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_SESSION_KEY_HEADER_BYTES = SESSION_KEY_HEADER.encode()


@dataclass(frozen=True, slots=True)
class Completion:
    """What one response's frames share, and where its observations go."""

    id: str
    created: int
    model: str
    record: RequestRecord
    metrics: EdgeMetrics

    def first_token(self) -> None:
        self.record.first_token()

    def finished(self, finished: pb.TurnFinished) -> None:
        self.metrics.completion_tokens.inc(finished.usage.completion_tokens)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, f"Request body is larger than {limit} bytes.", code="request_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def usage_of(finished: pb.TurnFinished) -> dict[str, int]:
    usage = finished.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state: EdgeState = request.app.state.edge
    state.access.check(client_ip(request.client), request.headers.get("authorization"))
    body = await read_body(
        request, state.config.gateway.http.endpoints.chat_completions.max_body_bytes
    )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None
    chat = parse_chat_request(document)
    headers = request.headers
    agent_id = resolve_agent(
        chat.model,
        headers.get("x-openclaw-agent-id", headers.get("x-openclaw-agent")),
        state.agent_ids,
        state.config.default_agent_id,
    )
    session_key = session_key_for(agent_id, chat.user, headers.get(SESSION_KEY_HEADER))
    record = record_of(request.scope)
    record.agent, record.session_key = agent_id, session_key
    turn_request = turn_request_for(chat, agent_id, session_key, request_id_var.get())
    completion = Completion(
        f"chatcmpl_{uuid.uuid4().hex}",
        int(time.time()),
        chat.model or "openclaw",
        record,
        state.metrics,
    )
    response: Response
    try:
        # A named session sticks to its worker; a fresh one goes where there is most room.
        sticky = SESSION_KEY_HEADER in headers or bool(chat.user)
        starting = state.workers.start_turn(turn_request, sticky)
        turn = await unless_disconnected(request.receive, starting)
        if chat.stream:
            keep_alive = state.config.gateway.keep_alive_seconds
            response = StreamingResponse(
                stream_completion(turn, completion, chat, keep_alive),
                media_type="text/event-stream",
                headers=_STREAM_HEADERS,
            )
        else:
            answer = await unless_disconnected(request.receive, complete(turn, completion))
            response = Response(answer, media_type="application/json")
    except ClientDisconnected:
        log.info("the client went away before the answer; its turn was cancelled")
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    response.raw_headers.append((_SESSION_KEY_HEADER_BYTES, session_key.encode()))
    return response


async def complete(turn: TurnCall, completion: Completion) -> bytes:
    parts: list[str] = []
    try:
        async for batch in turn.batches():
            for event in batch:
                if isinstance(event, pb.TextDelta):
                    if not parts:
                        completion.first_token()
                    parts.append(event.text)
                else:
                    finished = event
                    completion.finished(finished)
    finally:
        turn.cancel()
    return orjson.dumps(
        {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                    "logprobs": None,
                    "finish_reason": _FINISH_REASONS[finished.finish_reason],
                }
            ],
            "usage": usage_of(finished),
        }
    )


async def stream_completion(
    turn: TurnCall, completion: Completion, chat: ChatCompletionRequest, keep_alive: float
) -> AsyncIterator[bytes]:
    encoder = ChunkEncoder(completion.id, completion.created, completion.model)
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    streams_open = completion.metrics.streams_open
    streams_open.inc()
    try:
        yield encoder.role()
        async for batch in with_keep_alive(turn.batches(), keep_alive):
            if batch is None:
                yield KEEP_ALIVE
                continue
            frames: list[bytes] = []  # what arrived together goes out in one write
            for event in batch:
                if isinstance(event, pb.TextDelta):
                    completion.first_token()
                    frames.append(encoder.delta(event.text))
                else:
                    completion.finished(event)
                    frames.append(encoder.finish(_FINISH_REASONS[event.finish_reason]))
                    if include_usage:
                        frames.append(encoder.usage(usage_of(event)))
            if frames:
                yield b"".join(frames)
    except ApiError as error:
        log.warning("turn failed after the stream started: %s", error.message)
        yield error_frame(error)
    finally:
        turn.cancel()
        streams_open.dec()
    yield DONE

"""POST /v1/chat/completions as a pure ASGI app: auth, body, agent and session, one worker turn,
JSON or SSE.

This is the hot path, so it skips the framework's routing, dependency injection and response
classes: it reads the body, sends pre-encoded bytes, and waits on one disconnect watcher per
request, which cancels the request's work when its client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from starlette.types import Receive, Scope, Send

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.addresses import client_ip
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.errors import ApiError, bad_request, too_large
from gateway_edge.metrics import EdgeMetrics
from gateway_edge.observability import RequestRecord, record_of
from gateway_edge.protocol import ChatCompletionRequest, parse_chat_request
from gateway_edge.sessions import SESSION_KEY_HEADER, session_for
from gateway_edge.sse import DONE, KEEP_ALIVE, ChunkEncoder, error_frame
from gateway_edge.state import EdgeState
from gateway_edge.turn_input import turn_request_for
from gateway_edge.worker_pool import TurnCall
from services.ids import random_hex
from services.logging import request_id_var

log = logging.getLogger("clawgate.edge")
PATH = "/v1/chat/completions"
_FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: "stop",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
    pb.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; nobody receives it, logs show it
_JSON_HEADERS = [(b"content-type", b"application/json")]
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_SESSION_KEY_HEADER_BYTES = SESSION_KEY_HEADER.encode()


class ClientDisconnected(Exception):
    """The HTTP client closed the connection before the answer was complete."""


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


def _score(entry: pb.TokenLogprob) -> dict[str, object]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token_bytes) or None,
    }


def logprobs_json(entries: Iterable[pb.TokenLogprob]) -> list[dict[str, object]]:
    """OpenAI's `logprobs.content` entries."""
    return [
        {**_score(entry), "top_logprobs": [_score(top) for top in entry.top_logprobs]}
        for entry in entries
    ]


def usage_of(finished: pb.TurnFinished) -> dict[str, int]:
    usage = finished.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


async def send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ApiError) -> None:
    headers = [*_JSON_HEADERS, *((k.encode(), v.encode()) for k, v in error.headers.items())]
    await send_bytes(send, error.status, headers, error.body())


def _too_large(limit: int) -> ApiError:
    return too_large(f"Request body is larger than {limit} bytes.")


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes | bytearray:
    """The body as it came in one piece (most requests), or grown in one buffer: no list of
    chunks and no joined copy beside it (a 20 MB body took three times its size at its peak)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body: bytes | bytearray = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if not body:
            body = chunk
        else:
            if isinstance(body, bytes):
                body = bytearray(body)
            body += chunk
        if len(body) > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return body


def check_message_count(document: object, limit: int) -> None:
    """Refuses a request with too many messages before validating them one by one (400,000
    messages held the event loop for seconds)."""
    if isinstance(document, dict):
        messages = document.get("messages")
        if isinstance(messages, list) and len(messages) > limit:
            raise bad_request(
                f"Invalid 'messages': array too long. Expected an array with maximum length"
                f" {limit} (maxMessages), but got an array with length {len(messages)} instead.",
                "messages",
                "array_above_max_length",
            )


async def _cancel_on_disconnect(
    receive: Receive, work: asyncio.Task[None], gone: list[bool]
) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.append(True)
    work.cancel()


class ChatCompletionsEndpoint:
    def __init__(self, state: EdgeState) -> None:
        self._state = state
        endpoint = state.config.gateway.http.endpoints.chat_completions
        self._max_body = endpoint.max_body_bytes
        self._max_messages = endpoint.max_messages
        self._keep_alive = state.config.gateway.keep_alive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            error = ApiError(405, "Method not allowed.", headers={"allow": "POST"})
            await send_error(send, error)
            return
        started = False

        async def send_tracked(message: dict[str, object]) -> None:
            nonlocal started
            started = True
            await send(message)  # type: ignore[arg-type]

        try:
            await self._handle(scope, receive, send_tracked)  # type: ignore[arg-type]
        except ClientDisconnected:
            log.info("the client went away before the answer; its turn was cancelled")
            if not started:  # nobody receives it (the server drops it); logs and metrics show it
                await send_bytes(send, CLIENT_CLOSED_REQUEST, [], b"")
        except ApiError as error:
            if not started:
                await send_error(send, error)
        except Exception:
            log.exception("unexpected error")
            if not started:
                await send_error(send, ApiError(500, "Internal error.", "api_error"))

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._state
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        authorization = headers.get(b"authorization")
        state.access.check(
            client_ip(scope.get("client")),
            None if authorization is None else authorization.decode("latin-1"),
        )
        body = await read_body(receive, headers.get(b"content-length"), self._max_body)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad_request("The request body is not valid JSON.") from None
        del body
        check_message_count(document, self._max_messages)
        chat = parse_chat_request(document)
        del document
        agent_header = headers.get(b"x-openclaw-agent-id", headers.get(b"x-openclaw-agent"))
        agents = state.workers.known_agents()
        agent_id = resolve_agent(
            chat.model,
            None if agent_header is None else agent_header.decode("latin-1"),
            agents.ids,
            agents.default_id,
        )
        if chat.logprobs and agent_id not in agents.logprob_ids:
            raise bad_request(
                f"Agent {agent_id!r}'s model does not return logprobs.", "logprobs", "unsupported"
            )
        key_header = headers.get(_SESSION_KEY_HEADER_BYTES)
        session = session_for(
            agent_id, chat.user, None if key_header is None else key_header.decode("latin-1")
        )
        record = record_of(scope)
        record.agent, record.session_key = agent_id, session.key
        turn_request = turn_request_for(chat, agent_id, session, request_id_var.get())
        completion = Completion(
            f"chatcmpl_{random_hex()}",
            int(time.time()),
            chat.model or "openclaw",
            record,
            state.metrics,
        )
        response_headers = [(_SESSION_KEY_HEADER_BYTES, session.key.encode())]
        work = asyncio.current_task()
        assert work is not None
        gone: list[bool] = []
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, work, gone))
        turn: TurnCall | None = None
        try:
            # A named session sticks to its worker; a fresh one goes where there is most room.
            turn = await state.workers.start_turn(turn_request, sticky=session.named)
            if chat.stream:
                await self._stream(send, turn, completion, chat, response_headers)
            else:
                answer = await complete(turn, completion, bool(chat.logprobs))
                await send_bytes(send, 200, [*_JSON_HEADERS, *response_headers], answer)
        except asyncio.CancelledError:
            if not gone:
                raise
            work.uncancel()
            raise ClientDisconnected from None
        finally:
            watcher.cancel()
            if turn is not None:
                turn.cancel()

    async def _stream(
        self,
        send: Send,
        turn: TurnCall,
        completion: Completion,
        chat: ChatCompletionRequest,
        response_headers: list[tuple[bytes, bytes]],
    ) -> None:
        encoder = ChunkEncoder(completion.id, completion.created, completion.model)
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        streams_open = completion.metrics.streams_open
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_STREAM_HEADERS, *response_headers],
        }
        await send(start)  # type: ignore[arg-type]
        streams_open.inc()
        try:
            await send(_chunk(encoder.role()))
            # Until the finish: a failure that came with the last text raises on the next read.
            finished = False
            while not finished:
                batch = await turn.next_batch(self._keep_alive)
                if batch is None:
                    await send(_chunk(KEEP_ALIVE))
                    continue
                frames: list[bytes] = []  # what arrived together goes out in one write
                for event in batch:
                    if isinstance(event, pb.TextDelta):
                        completion.first_token()
                        if event.logprobs:
                            scores = logprobs_json(event.logprobs)
                            frames.append(encoder.delta_with_logprobs(event.text, scores))
                        else:
                            frames.append(encoder.delta(event.text))
                    else:
                        finished = True
                        completion.finished(event)
                        frames.append(encoder.finish(_FINISH_REASONS[event.finish_reason]))
                        if include_usage:
                            frames.append(encoder.usage(usage_of(event)))
                await send(_chunk(b"".join(frames)))
        except ApiError as error:
            log.warning("turn failed after the stream started: %s", error.message)
            await send(_chunk(error_frame(error)))
        finally:
            streams_open.dec()
        await send({"type": "http.response.body", "body": DONE})


def _chunk(body: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": body, "more_body": True}


async def complete(turn: TurnCall, completion: Completion, with_logprobs: bool = False) -> bytes:
    parts: list[str] = []
    scores: list[dict[str, object]] = []
    finished: pb.TurnFinished | None = None
    while finished is None:
        batch = await turn.next_batch()
        assert batch is not None  # no wait_seconds: it waits for events
        for event in batch:
            if isinstance(event, pb.TextDelta):
                if not parts:
                    completion.first_token()
                parts.append(event.text)
                if event.logprobs:
                    scores += logprobs_json(event.logprobs)
            else:
                finished = event
                completion.finished(finished)
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
                    "logprobs": {"content": scores, "refusal": None} if with_logprobs else None,
                    "finish_reason": _FINISH_REASONS[finished.finish_reason],
                }
            ],
            "usage": usage_of(finished),
        }
    )

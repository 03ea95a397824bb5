"""The one turn driver: every endpoint that runs an agent turn is a `TurnEndpoint` with a
`Dialect` (chat completions, responses).

The driver owns what every dialect does alike: method and auth checks, the body and item
limits, the agent and session (`prepare_turn`), the worker turn, disconnects, keep-alives,
metrics and logs, and the stream and whole-answer loops. A dialect owns only what differs:
how its request becomes a `TurnInput` (`parse`) and how the turn's events are said in its
shape (`AnswerEncoder`). It is a pure ASGI app: the hot path skips the framework's routing and
response classes, and sends pre-encoded bytes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, assert_never

from starlette.types import Receive, Scope, Send

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.answer_stream import AnswerEncoder, StreamWriter
from gateway_edge.asgi import (
    JSON_HEADERS,
    STREAM_HEADERS,
    answered_or_refused,
    cancelled_on_disconnect,
    read_json,
    request_headers,
    send_bytes,
    send_error,
)
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.limits import Admission
from gateway_edge.observability import RequestRecord
from gateway_edge.principal import WRITE, Principal
from gateway_edge.remote_turn import RemoteTurn
from gateway_edge.sse import DONE, KEEP_ALIVE
from gateway_edge.state import EdgeState
from gateway_edge.turn_input import TurnInput
from gateway_edge.turn_setup import SESSION_KEY_HEADER_BYTES, PreparedTurn, prepare_turn
from services import tracing

log = logging.getLogger("clawgate.edge")


NativeT = TypeVar("NativeT")


@dataclass(slots=True)
class AdaptedRequest(Generic[NativeT]):
    """A dialect's request said as the turn that runs it."""

    native: NativeT  # the request in its dialect's shape, which only that dialect reads
    turn: TurnInput
    stream: bool
    # The stored response this request follows (Responses' previous_response_id), found by
    # `Dialect.resolve`.
    previous_response_id: str | None = None
    continues: pb.FindResponseResponse | None = None


class Dialect(Protocol[NativeT]):
    path: str
    items_field: str  # the array `maxMessages` counts: chat `messages`, Responses `input`
    max_body_bytes: int
    max_items: int

    def parse(self, document: Any) -> AdaptedRequest[NativeT]:
        """The parsed body as a turn; raises ApiError (400) naming the bad param. A large
        body's runs on a thread (it may be called there)."""

    async def resolve(
        self, request: AdaptedRequest[NativeT], state: EdgeState, principal: Principal
    ) -> None:
        """Finds what the request names in the workers' stores; raises ApiError (404)."""

    def encoder(self, request: AdaptedRequest[NativeT], turn: pb.RunTurnRequest) -> AnswerEncoder:
        """A fresh encoder for one answer (it may stamp `turn`, e.g. the response id)."""


# A body is light while it is at most this large and holds at most this many items: parsing
# it in place holds the loop for about a millisecond.
LIGHT_BODY_BYTES = 256 * 1024
LIGHT_ITEMS = 256


def _is_light(headers: dict[bytes, bytes], document: object, field: str) -> bool:
    length = headers.get(b"content-length", b"")
    if not length.isdigit() or int(length) > LIGHT_BODY_BYTES:
        return False
    items = document.get(field) if isinstance(document, dict) else None
    return not isinstance(items, list) or len(items) <= LIGHT_ITEMS


def check_item_count(document: object, field: str, limit: int) -> None:
    """Refuses a request whose `field` array holds more than `limit` items before validating
    them one by one (400,000 held the event loop for seconds, and the worker for minutes)."""
    if isinstance(document, dict):
        items = document.get(field)
        if isinstance(items, list) and len(items) > limit:
            raise bad_request(
                f"Invalid '{field}': array too long. Expected an array with maximum length"
                f" {limit} (maxMessages), but got an array with length {len(items)} instead.",
                field,
                "array_above_max_length",
            )


class TurnEndpoint:
    """`POST <dialect.path>`: one agent turn per request, JSON or SSE."""

    def __init__(self, state: EdgeState, dialect: Dialect[Any]) -> None:
        self.path = dialect.path
        self.path_format = dialect.path  # the metrics' route label, as the framework's routes
        self._state = state
        self._dialect = dialect
        self._keep_alive = state.config.gateway.keep_alive_seconds
        metrics = state.metrics  # every turn route has the same series, from the start
        metrics.first_token_seconds_by(self.path)
        self._streams_open = metrics.streams_open_by(self.path)
        self._completion_tokens = metrics.completion_tokens_by(self.path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        if scope["method"] != "POST":
            await send_error(send, ApiError(405, "Method not allowed.", headers={"allow": "POST"}))
            return
        await answered_or_refused(lambda tracked: self._serve(scope, receive, tracked), send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        state, dialect = self._state, self._dialect
        headers = request_headers(scope)
        principal = state.access.admit(scope.get("client"), headers)
        principal.require(WRITE)
        document = await read_json(receive, headers, dialect.max_body_bytes)
        check_item_count(document, dialect.items_field, dialect.max_items)
        # A large body is validated and turned into a turn on a thread: the loop carries
        # everyone's streams.
        prepare = functools.partial(prepare_turn, state, scope, headers)
        off_loop, light = state.off_loop, _is_light(headers, document, dialect.items_field)
        adapted = await off_loop.run(light, dialect.parse, document)
        if adapted.turn.sources is not None:  # URLs fetched, files read on a thread
            await adapted.turn.sources.ready(adapted.turn.instructions, off_loop)
        await dialect.resolve(adapted, state, principal)
        prepared = await off_loop.run(light, prepare, adapted.turn, principal, adapted.continues)
        encoder = dialect.encoder(adapted, prepared.request)
        admission = await state.limits.admit(principal.counted_as, prepared.request.agent_id)
        try:
            if admission.tokens_left is not None:
                prepared.request.budget.tokens = admission.tokens_left
            if admission.usd_left is not None:
                prepared.request.budget.usd = admission.usd_left
            await self._run(send, receive, prepared, adapted, encoder, admission)
        finally:
            await admission.release()

    async def _run(
        self,
        send: Send,
        receive: Receive,
        prepared: PreparedTurn,
        adapted: AdaptedRequest[Any],
        encoder: AnswerEncoder,
        admission: Admission,
    ) -> None:
        """Runs the admitted turn on a worker, answers it and charges what it spent."""
        state, session = self._state, prepared.session
        headers = [(SESSION_KEY_HEADER_BYTES, session.key.encode()), *admission.headers]
        async with cancelled_on_disconnect(receive):
            # A named session sticks to its worker; a fresh one goes where there is most room.
            starting = state.workers.start_turn(
                prepared.request, sticky=session.named, whole_answer=not adapted.stream
            )
            async with await starting as turn:
                if adapted.stream:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [*STREAM_HEADERS, *headers],
                        }
                    )
                    await self._stream(send, turn, encoder, prepared.record, admission)
                else:
                    answer = await self._whole(turn, encoder, prepared.record, admission)
                    await send_bytes(send, 200, [*JSON_HEADERS, *headers], answer)

    async def _stream(
        self,
        send: Send,
        turn: RemoteTurn,
        encoder: AnswerEncoder,
        record: RequestRecord,
        admission: Admission,
    ) -> None:
        keep_alive = self._keep_alive
        writer = StreamWriter(send, encoder, record, turn)
        self._streams_open.inc()
        try:
            await writer.send(encoder.opening())
            turn.stream_to(writer.take)  # plain events go out from the link's reader
            # Until the finish: a failure that came with the last text raises on the next read.
            finished = False
            while not finished:
                await writer.settle()
                quiet_left = writer.quiet_left(keep_alive)
                batch = await turn.next_batch(quiet_left) if quiet_left > 0 else None
                if batch is None:  # quiet for a while, or the reader needs this task
                    if writer.quiet_left(keep_alive) <= 0:
                        await writer.send(KEEP_ALIVE)
                    continue
                frames: list[bytes] = []  # what arrived together goes out in one write
                for event in batch:
                    if not isinstance(event, pb.TurnFinished):
                        frames.append(writer.frame(event))
                        continue
                    finished = True
                    self._completion_tokens.inc(event.usage.completion_tokens)
                    # Charged (and its places given back) before the client reads the end:
                    # its next request sees this turn's spend.
                    await admission.finish(event.spent.tokens, event.spent.cost_usd)
                    frames.append(encoder.finish(event))
                if frames:
                    await writer.send(b"".join(frames))
        except ApiError as error:
            tracing.fail_current(error.message, error.code or error.type)
            log.warning("turn failed after the stream started: %s", error.message)
            await writer.settle()
            await writer.send(encoder.failed(error))
        finally:
            turn.stream_to(None)
            self._streams_open.dec()
        await send({"type": "http.response.body", "body": DONE})

    async def _whole(
        self, turn: RemoteTurn, encoder: AnswerEncoder, record: RequestRecord, admission: Admission
    ) -> bytes:
        texts: list[pb.TextDelta] = []
        thoughts: list[pb.ReasoningDelta] = []
        turn.read_whole()
        while True:
            batch = await turn.next_batch()
            assert batch is not None  # no wait_seconds: it waits for events
            for event in batch:
                match event:
                    case pb.TextDelta():  # no time to first token: it all comes at once
                        texts.append(event)
                    case pb.ReasoningDelta():
                        thoughts.append(event)
                    case pb.ToolCallDelta() | pb.ToolRunStarted() | pb.ToolRunFinished():
                        pass  # the finished event has the client's calls whole
                    case pb.TurnFinished():
                        self._completion_tokens.inc(event.usage.completion_tokens)
                        await admission.finish(event.spent.tokens, event.spent.cost_usd)
                        return encoder.whole(texts, event, thoughts)
                    case _:
                        assert_never(event)

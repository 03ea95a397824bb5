"""A turn running on a worker, as the edge's endpoints see it: typed events in, one worker
slot held.

`WorkerPool.start_turn` opens a `RemoteTurn` on a worker and waits (`wait_started`) until the
worker has started it or refused it (`NotStarted` says whether another worker may take it);
`async with turn:` gives its slot back and cancels it on the worker if it has not ended. Events
come in the batches they arrived in: text, tool-call and tool-run events, and last the finished
event; an error event raises `ApiError`. This is the one place that reads the wire's event
kinds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import assert_never

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError, api_error_from_call, refused, turn_failed, worker_lost
from gateway_edge.worker import Worker
from gateway_edge.worker_link import LinkFailure, TurnInbox
from services.tracing import NO_SPAN, Span
from services.turn_events import kind_of, unknown_kind

log = logging.getLogger("clawgate.edge.workers")
# What a streamed answer relays as it comes: everything but the finish.
PlainEvent = (
    pb.TextDelta | pb.ReasoningDelta | pb.ToolCallDelta | pb.ToolRunStarted | pb.ToolRunFinished
)
Event = PlainEvent | pb.TurnFinished
_ENDED_EARLY = ApiError(
    502, "The worker ended the turn without finishing it.", "api_error", code="worker_error"
)


# Codes a broken stream ends with when the worker itself refused it (a wrong shared secret, an
# older worker): trying the same on another worker helps nobody. Any other code is a transport
# failure (UNAVAILABLE, or INTERNAL from gRPC core after a kill or a GOAWAY).
REFUSED_STREAM = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
)


class NotStarted(Exception):
    """The worker did not start the turn; `movable` says whether another worker may."""

    def __init__(self, error: ApiError, status: int, movable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status  # a pb.ErrorCode
        self.movable = movable

    @property
    def outcome(self) -> str:
        return pb.ErrorCode.Name(self.status).removeprefix("ERROR_CODE_").lower()  # type: ignore[arg-type]


def unreachable(status: int = pb.ERROR_CODE_UNAVAILABLE) -> NotStarted:
    return NotStarted(refused(pb.ERROR_CODE_UNAVAILABLE, None), status, movable=True)


def protocol_error(what: str) -> ApiError:
    return ApiError(
        502, f"The worker broke the turn protocol: {what}.", "api_error", code="worker_error"
    )


class RemoteTurn:
    __slots__ = (
        "worker",
        "inbox",
        "_early",
        "_on_outcome",
        "_outcome",
        "_failure",
        "_closed",
        "_span",
    )

    def __init__(
        self,
        worker: Worker,
        inbox: TurnInbox,
        on_outcome: Callable[[str], None],
        span: Span = NO_SPAN,
    ) -> None:
        self.worker = worker
        self._span = span  # the call's client span, ended with the turn
        self.inbox = inbox
        self._early: Sequence[pb.RunTurnEvent] = ()  # events that came with `started`
        self._on_outcome = on_outcome
        self._outcome: str | None = None  # ok, turn_error, worker_lost or cancelled
        self._failure: ApiError | None = None
        self._closed = False
        worker.in_flight += 1  # given back in close(), the one other place that counts

    async def __aenter__(self) -> RemoteTurn:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, outcome: str = "cancelled", why: str = "") -> None:
        """Cancels the turn on its worker unless it ended, and gives its slot back (once);
        `outcome` is what the metrics count when it had not ended, `why` says it in its trace."""
        if self._closed:
            return
        self._closed = True
        self.inbox.cancel()  # a no-op once its last event arrived
        self._end(outcome)
        self.worker.in_flight -= 1
        span = self._span
        if span.live:
            ended = self._outcome or outcome
            if ended != "ok":
                failure = self._failure
                span.fail(why or (failure.message if failure else ended), ended)
            span.end()

    async def wait_started(self, check_seconds: float, health_timeout: float) -> None:
        """Waits for the turn's first events: returns once it started, else raises
        NotStarted (or ApiError when the worker answered nonsense)."""
        first = await self._first_events(check_seconds, health_timeout)
        head = first[0]
        match kind := kind_of(head):
            case "started":
                self._early = first[1:]
                return
            case "error":
                error = head.error
            case (
                "delta" | "finished" | "tool_call" | "tool_started" | "tool_finished" | "reasoning"
            ):
                raise protocol_error(f"the turn's first event is {kind!r}, not 'started'")
            case None:
                raise protocol_error(unknown_kind(head))
            case _:
                assert_never(kind)
        if error.source != pb.ERROR_SOURCE_UNSPECIFIED:  # the store's or the budget's: not movable
            raise NotStarted(turn_failed(error), error.status, movable=False)
        # UNAVAILABLE: the worker is draining (its health watch says so too).
        movable = error.status in (pb.ERROR_CODE_UNAVAILABLE, pb.ERROR_CODE_RESOURCE_EXHAUSTED)
        raise NotStarted(refused(error.status, error.message), error.status, movable)

    async def _first_events(
        self, check_seconds: float, health_timeout: float
    ) -> Sequence[pb.RunTurnEvent]:
        """The turn's first events. Raises NotStarted (movable) when the stream broke, or when
        the turn waited past the start bound and its worker did not answer a health check."""
        worker = self.worker
        while True:
            try:
                events = await self.inbox.next_events(check_seconds)
            except LinkFailure as failure:
                status = failure.code.value[0]  # pb.ErrorCode numbers are gRPC's
                if failure.code in REFUSED_STREAM:  # the worker answered, and said no
                    error = api_error_from_call(failure.code, failure.details)
                    raise NotStarted(error, status, movable=False) from None
                worker.set_answering(False)
                raise unreachable(status) from None
            if events:
                return events
            # A worker that is alive (busy, or the turn waits for its session) keeps the turn.
            if not await worker.answers(health_timeout):
                log.warning(
                    "worker %s did not start a turn within %gs nor take a connection",
                    worker.address,
                    check_seconds,
                )
                raise unreachable(pb.ERROR_CODE_DEADLINE_EXCEEDED)

    def read_whole(self) -> None:
        """The caller wants the whole answer, not its pieces: `next_batch` returns once the
        turn ended (or failed), with everything that came. Saves a wake-up per message."""
        self.inbox.whole = True

    def _end(self, outcome: str) -> None:
        if self._outcome is None:
            self._outcome = outcome
            self._on_outcome(outcome)

    async def next_batch(self, wait_seconds: float | None = None) -> list[Event] | None:
        """The events that arrived together; the last batch ends with the finished event. None
        when `wait_seconds` pass without events. A failure raises ApiError, after the batch of
        events that came before it."""
        while self._outcome is None:
            events = self._early
            if events:
                self._early = ()
            else:
                try:
                    events = await self.inbox.next_events(wait_seconds)
                except LinkFailure as failure:
                    self._end("worker_lost")
                    raise worker_lost(self.worker.address, failure.code, failure.details) from None
                if not events:
                    return None
            batch: list[Event] = []
            for event in events:
                match kind := kind_of(event):
                    case "delta" | "reasoning" | "tool_call" | "tool_started" | "tool_finished":
                        batch.append(getattr(event, kind))
                    case "finished":
                        self._end("ok")
                        batch.append(event.finished)
                        return batch
                    case "error":
                        self._fail("turn_error", turn_failed(event.error))
                        break
                    case "started":
                        self._fail("turn_error", protocol_error("a second started event"))
                        break
                    case None:
                        self._fail("turn_error", protocol_error(unknown_kind(event)))
                        break
                    case _:
                        assert_never(kind)
            if batch:
                return batch
        raise self._failure or _ENDED_EARLY

    def stream_to(self, write: Callable[[list[PlainEvent]], bool] | None) -> None:
        """Hands the turn's plain events (text, tool-call pieces, reasoning, tool runs) to
        `write` as they arrive, on the link's reader, instead of queueing them for
        `next_batch`; what `write` refuses (False) queues, in order. The finish, a failure and
        anything unexpected always queue. None stops it."""
        self.inbox.listener = None if write is None else functools.partial(self._direct, write)

    def _direct(
        self, write: Callable[[list[PlainEvent]], bool], events: Sequence[pb.RunTurnEvent]
    ) -> bool:
        if self._early or self._outcome is not None:
            return False  # what came first goes first, through next_batch
        batch: list[PlainEvent] = []
        for event in events:
            match kind := kind_of(event):
                case "delta" | "reasoning" | "tool_call" | "tool_started" | "tool_finished":
                    batch.append(getattr(event, kind))
                case _:
                    return False
        return write(batch)

    def nudge(self) -> None:
        """Ends a `next_batch` wait early (it returns None, as when its time ran out)."""
        self.inbox.wake()

    def _fail(self, outcome: str, failure: ApiError) -> None:
        self._end(outcome)
        self._failure = failure

"""A turn on its worker, as the edge's handlers use it: typed events in, one worker slot held.

`WorkerPool.start_turn` returns a `Turn` whose worker has started it; `async with turn:` gives
its slot back and cancels it on the worker if it has not ended. Events come in the batches
they arrived in: text and tool-call deltas, and last the finished event; an error event raises
`ApiError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError, turn_failed, worker_lost
from gateway_edge.worker import Worker
from gateway_edge.worker_link import LinkFailure, TurnInbox

Event = pb.TextDelta | pb.ToolCallDelta | pb.ToolRunStarted | pb.ToolRunFinished | pb.TurnFinished
_ENDED_EARLY = ApiError(
    502, "The worker ended the turn without finishing it.", "api_error", code="worker_error"
)


class Turn:
    __slots__ = (
        "worker",
        "inbox",
        "_early",
        "_on_outcome",
        "_outcome",
        "_failure",
        "_closed",
    )

    def __init__(self, worker: Worker, inbox: TurnInbox, on_outcome: Callable[[str], None]) -> None:
        self.worker = worker
        self.inbox = inbox
        self._early: Sequence[pb.RunTurnEvent] = ()  # events that came with `started`
        self._on_outcome = on_outcome
        self._outcome: str | None = None  # ok, turn_error, worker_lost or cancelled
        self._failure: ApiError | None = None
        self._closed = False
        worker.in_flight += 1  # given back in close(), the one other place that counts

    async def __aenter__(self) -> Turn:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, outcome: str = "cancelled") -> None:
        """Cancels the turn on its worker unless it ended, and gives its slot back (once);
        `outcome` is what the metrics count when it had not ended."""
        if self._closed:
            return
        self._closed = True
        self.inbox.cancel()  # a no-op once its last event arrived
        self._end(outcome)
        self.worker.in_flight -= 1

    def accept(self, early: Sequence[pb.RunTurnEvent]) -> None:
        """Its worker started it; `early` are the events that came with `started`."""
        self._early = early

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
                kind = event.WhichOneof("event")
                if kind == "delta":
                    batch.append(event.delta)
                elif kind == "tool_call":
                    batch.append(event.tool_call)
                elif kind == "tool_started":
                    batch.append(event.tool_started)
                elif kind == "finished":
                    self._end("ok")
                    batch.append(event.finished)
                    return batch
                elif kind == "error":
                    self._end("turn_error")
                    self._failure = turn_failed(event.error)
                    break
            if batch:
                return batch
        raise self._failure or _ENDED_EARLY

"""A turn's answer on its way to the client: the dialect's `AnswerEncoder`, and the
`StreamWriter` that sends a streamed answer's frames from whichever side has them first.

A stream's text arrives on its worker link's reader, one task for every turn on that worker.
Waking each stream's own task to write one token cost more CPU than the token's write itself
(issue 48 in docs/performance.md), so the reader writes a stream's plain events at once when
the socket takes them without waiting, and the stream's task does only what needs waiting: a
send the socket made wait, the finish (charged before its frame goes), a failure, keep-alives.
Frames leave in the order their events arrived: the reader writes only while nothing of the
stream is queued or being sent by its task.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Protocol, assert_never

from starlette.types import Send

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.asgi import body_part, send_now
from gateway_edge.errors import ApiError
from gateway_edge.observability import RequestRecord
from gateway_edge.remote_turn import PlainEvent, RemoteTurn


class AnswerEncoder(Protocol):
    """One answer in a dialect's shape: SSE frames while streaming, or the whole body."""

    def opening(self) -> bytes:
        """The stream's first frames, sent before the first event."""

    def text(self, delta: pb.TextDelta) -> bytes: ...

    def reasoning(self, delta: pb.ReasoningDelta) -> bytes:
        """A piece of the model's thinking: said apart from the answer's text."""

    def tool_call(self, piece: pb.ToolCallDelta) -> bytes: ...

    def tool_run(self, event: pb.ToolRunStarted | pb.ToolRunFinished) -> bytes:
        """The agent's own tool runs: not the client's calls; at least keeps the stream alive."""

    def finish(self, finished: pb.TurnFinished) -> bytes: ...

    def failed(self, error: ApiError) -> bytes:
        """A failure after the stream started (its status line is gone)."""

    def whole(
        self,
        texts: Sequence[pb.TextDelta],
        finished: pb.TurnFinished,
        thoughts: Sequence[pb.ReasoningDelta] = (),
    ) -> bytes:
        """The non-stream body; `finished` carries the client's tool calls whole."""


class StreamWriter:
    """One streamed answer's frames: `take` on the link's reader, the rest on the stream's task
    (`send`, `settle`)."""

    __slots__ = ("_send", "_encoder", "_record", "_turn", "_rest", "_failure", "_busy", "_sent_at")

    def __init__(
        self, send: Send, encoder: AnswerEncoder, record: RequestRecord, turn: RemoteTurn
    ) -> None:
        self._send = send
        self._encoder = encoder
        self._record = record
        self._turn = turn
        self._rest: Awaitable[None] | None = None  # a send the reader began that had to wait
        self._failure: Exception | None = None  # what the reader met, for the task to raise
        self._busy = False  # the task is sending: the reader leaves the stream alone
        self._sent_at = time.monotonic()

    def frame(self, event: PlainEvent) -> bytes:
        encoder = self._encoder
        match event:
            case pb.TextDelta():
                self._record.first_token()
                return encoder.text(event)
            case pb.ToolCallDelta():
                self._record.first_token()
                return encoder.tool_call(event)
            case pb.ReasoningDelta():
                self._record.first_token()  # the first thing the client sees
                return encoder.reasoning(event)
            case pb.ToolRunStarted() | pb.ToolRunFinished():
                return encoder.tool_run(event)
            case _:
                assert_never(event)

    def take(self, events: list[PlainEvent]) -> bool:
        """The reader's way in: sends the events' frames now, unless the task has the stream
        (False: they queue for it)."""
        if self._busy or self._rest is not None or self._failure is not None:
            return False
        try:
            frames = [self.frame(event) for event in events]
            rest = send_now(self._send, body_part(b"".join(frames)))
        except Exception as error:  # the reader carries every turn: this is this stream's
            self._failure = error
            self._turn.nudge()
            return True
        self._sent_at = time.monotonic()
        if rest is not None:
            self._rest = rest
            self._turn.nudge()  # only a task can wait for the socket
        return True

    async def send(self, body: bytes) -> None:
        """Sends from the stream's task; the reader queues meanwhile."""
        self._busy = True
        try:
            await self._send(body_part(body))
        finally:
            self._busy = False
        self._sent_at = time.monotonic()

    async def settle(self) -> None:
        """Finishes a send the reader began; raises what the reader met."""
        if self._failure is not None:
            raise self._failure
        if self._rest is not None:
            await self._rest
            self._rest = None

    def quiet_left(self, keep_alive: float) -> float:
        """Seconds until the stream has been quiet for `keep_alive` (a keep-alive is due)."""
        return self._sent_at + keep_alive - time.monotonic()

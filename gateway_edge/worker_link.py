"""One `Exchange` stream per worker: the edge's turns to that worker share it.

Whatever is ready together (turns to open, cancels, credits) goes out in one message, and one
reader hands each turn its events, so a busy edge pays gRPC's per-message cost once for many
turns instead of a call per turn. Each turn may receive a window of events
(services/credit.py) ahead of its HTTP client and gives credit back as the client takes them,
so a slow reader pauses only its own turn. When the stream breaks, its open turns fail as an
unavailable worker would, and the next turn opens a new stream.

No message exceeds `max_message_bytes` (what the worker accepts): turns opened together share a
message only while they fit, and the caller refuses a single turn that cannot fit at all, so one
large turn never breaks the stream that its neighbours share.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services.credit import WINDOW, CreditWindow

log = logging.getLogger("clawgate.edge.workers")
_ENDING = ("finished", "error")
OPEN_OVERHEAD_BYTES = 64  # what a TurnOpen adds around its request, generously
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default


def _has_unknown_kind(events: Sequence[pb.RunTurnEvent]) -> bool:
    return any(event.WhichOneof("event") is None for event in events)


class LinkFailure(Exception):
    """The turn's stream to its worker broke; `code` is what the call ended with."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class TurnInbox:
    """Events of one turn as its worker sends them; read with `next_events`."""

    __slots__ = (
        "id",
        "ended",
        "whole",
        "listener",
        "_link",
        "_batches",
        "_waiter",
        "_failure",
        "_credit",
    )

    def __init__(self, link: WorkerLink, turn_id: int) -> None:
        self.id = turn_id
        self.ended = False  # its finished or error event has arrived
        # Read only once it ended (a non-stream answer): arrivals before the end wake nobody,
        # and their credit goes back as they arrive.
        self.whole = False
        # Takes events on the reader as they arrive, unless it returns False (they queue then).
        self.listener: Callable[[Sequence[pb.RunTurnEvent]], bool] | None = None
        self._link = link
        self._batches: deque[Sequence[pb.RunTurnEvent]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: LinkFailure | None = None
        self._credit = CreditWindow()

    def wake(self) -> None:
        """Ends a `next_events` wait, with whatever has arrived (perhaps nothing)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def deliver(self, events: Sequence[pb.RunTurnEvent]) -> None:
        listener = self.listener
        if listener is not None and not self._batches and listener(events):
            self._give_back(len(events))
            return
        self._batches.append(events)
        if self.whole and not self.ended and not _has_unknown_kind(events):
            self._give_back(len(events))
            return
        self.wake()  # an event of an unknown kind fails the turn: its reader must see it

    def _give_back(self, events: int) -> None:
        give_back = self._credit.took(events)
        if give_back and not self.ended:
            self._link.grant(self.id, give_back)

    def fail(self, failure: LinkFailure) -> None:
        self._failure = failure
        self.wake()

    async def next_events(self, wait_seconds: float | None = None) -> Sequence[pb.RunTurnEvent]:
        """The events that arrived since the last call, in order (those of one message, or of
        several that queued), or () when `wait_seconds` passed without any; raises
        LinkFailure when the stream broke."""
        if not self._batches:
            if self._failure is not None:
                raise self._failure
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if wait_seconds is None else loop.call_later(wait_seconds, self.wake)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._batches:
                if self._failure is not None:
                    raise self._failure
                return ()
        events = self._batches.popleft()
        if self._batches:  # what queued behind a busy socket leaves together, in order
            events = [*events, *itertools.chain.from_iterable(self._batches)]
            self._batches.clear()
        if not self.whole:
            self._give_back(len(events))
        return events

    def cancel(self) -> None:
        """Tells the worker to abort the turn, unless it already ended."""
        if not self.ended:
            self.ended = True
            self._link.cancel(self.id)


class WorkerLink:
    def __init__(
        self,
        stub: pb_grpc.AgentServiceStub,
        metadata: tuple[tuple[str, str], ...],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self._stub = stub
        self._metadata = metadata
        self._max_message_bytes = max_message_bytes
        self._ids = itertools.count(1)
        self._turns: dict[int, TurnInbox] = {}
        self._call: grpc.aio.StreamStreamCall | None = None
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        # The next message, built in place: a sub-message given to a constructor is copied.
        self._frame = pb.ExchangeRequest()
        self._frame_bytes = 0  # the opens' share of it
        self._sealed: list[pb.ExchangeRequest] = []  # full messages waiting for the writer
        self._credits: dict[int, int] = {}
        self._pending = asyncio.Event()

    def open_turn(
        self, request: pb.RunTurnRequest, size: int = 0, whole_answer: bool = False
    ) -> TurnInbox:
        """Opens a turn; `size` is the request's ByteSize (0 when surely small). The caller
        checked that it fits in one message. `whole_answer`: see TurnOpen in the contract."""
        if self._call is None:
            self._connect()
        size += OPEN_OVERHEAD_BYTES
        if self._frame_bytes and self._frame_bytes + size > self._max_message_bytes:
            self._sealed.append(self._frame)
            self._frame = pb.ExchangeRequest()
            self._frame_bytes = 0
        self._frame_bytes += size
        inbox = TurnInbox(self, next(self._ids))
        self._turns[inbox.id] = inbox
        opened = self._frame.opens.add()
        opened.turn_id = inbox.id
        opened.credit = WINDOW
        opened.whole_answer = whole_answer
        opened.request.CopyFrom(request)
        self._pending.set()
        return inbox

    def grant(self, turn_id: int, events: int) -> None:
        if turn_id in self._turns:
            self._credits[turn_id] = self._credits.get(turn_id, 0) + events
            self._pending.set()

    def cancel(self, turn_id: int) -> None:
        if self._turns.pop(turn_id, None) is not None:
            self._credits.pop(turn_id, None)
            self._frame.cancels.append(turn_id)
            self._pending.set()

    async def close(self) -> None:
        call, tasks = self._call, self._tasks
        if call is not None:
            call.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _connect(self) -> None:
        call = self._stub.Exchange(metadata=self._metadata)
        self._call = call
        self._tasks = (
            asyncio.create_task(self._write(call)),
            asyncio.create_task(self._read(call)),
        )

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            frame, self._frame, self._frame_bytes = self._frame, pb.ExchangeRequest(), 0
            for turn_id, events in self._credits.items():
                credit = frame.credits.add()
                credit.turn_id = turn_id
                credit.events = events
            self._credits = {}
            frames, self._sealed = [*self._sealed, frame], []
            try:
                for frame in frames:
                    await call.write(frame)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the reader sees the call end and fails its turns

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        failure = LinkFailure(grpc.StatusCode.UNAVAILABLE, "the worker ended the stream")
        try:
            while (reply := await call.read()) is not grpc.aio.EOF:
                for turn in reply.turns:
                    inbox = self._turns.get(turn.turn_id)
                    if inbox is None:
                        continue  # cancelled here while its events were on the way
                    events = turn.events
                    if events and events[-1].WhichOneof("event") in _ENDING:
                        inbox.ended = True
                        del self._turns[turn.turn_id]
                        self._credits.pop(turn.turn_id, None)
                    inbox.deliver(events)
        except grpc.aio.AioRpcError as error:
            failure = LinkFailure(error.code(), error.details())
        finally:
            self._broken(call, failure)

    def _broken(self, call: grpc.aio.StreamStreamCall, failure: LinkFailure) -> None:
        call.cancel()
        if self._call is not call:
            return
        if self._turns:
            log.info(
                "stream to the worker broke (%s); failing its %d turns", failure, len(self._turns)
            )
        self._call = None
        writer, _ = self._tasks
        writer.cancel()
        self._tasks = ()
        turns, self._turns = self._turns, {}
        self._frame, self._frame_bytes, self._sealed = pb.ExchangeRequest(), 0, []
        self._credits = {}
        for inbox in turns.values():
            inbox.fail(failure)

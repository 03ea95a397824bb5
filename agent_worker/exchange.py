"""The worker's side of `Exchange`: many turns over one stream, their events sent in shared
messages.

Each turn runs in its own task and queues its events; one sender takes whatever is ready across
all turns, within each turn's credit, and writes it as one message. A turn whose caller has no
room left stops being read, and once its queue is full its provider waits. Events are queued as
domain objects and written straight into the outgoing message: building a proto per event and
copying it into the message cost more than twice as much.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import aclosing

import grpc

from agent_worker.domain import TurnEvent, TurnFinished
from agent_worker.errors import TurnError
from agent_worker.turn_runner import STREAM_BROKEN
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.logging import request_id_var

log = logging.getLogger("clawgate.worker")
EVENT_BUFFER = 256  # events a turn may run ahead of its caller before the provider is paused
_UNLIMITED = 2**62
RunTurn = Callable[[pb.RunTurnRequest], AsyncGenerator[TurnEvent, None]]
FillEvent = Callable[[pb.RunTurnEvent, TurnEvent | TurnError], None]


class _Draining(TurnError):
    code = grpc.StatusCode.UNAVAILABLE


_DRAINING = _Draining("the worker is shutting down")


class _Turn:
    __slots__ = ("id", "task", "events", "credit", "ended", "room")

    def __init__(self, turn_id: int, credit: int) -> None:
        self.id = turn_id
        self.task: asyncio.Task[None] | None = None
        self.events: deque[TurnEvent | TurnError] = deque()
        self.credit = credit
        self.ended = False  # its last event is queued
        self.room = asyncio.Event()  # set while the queue has room
        self.room.set()


class ExchangeCall:
    """One open Exchange: reads opens, cancels and credits; yields shared event messages."""

    def __init__(
        self,
        run_turn: RunTurn,
        fill_event: FillEvent,
        *,
        draining: Callable[[], bool],
        on_turn_open: Callable[[], None],
        on_turn_closed: Callable[[], None],
    ) -> None:
        self._run_turn = run_turn
        self._fill_event = fill_event
        self._draining = draining
        self._on_turn_open = on_turn_open
        self._on_turn_closed = on_turn_closed
        self._turns: dict[int, _Turn] = {}
        self._ready: dict[int, _Turn] = {}  # turns with events to send and credit to send them
        self._wakeup = asyncio.Event()
        self._reading = True

    async def responses(
        self, requests: AsyncIterable[pb.ExchangeRequest]
    ) -> AsyncGenerator[pb.ExchangeResponse, None]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while self._reading or self._turns:
                # Collects as soon as it is woken. Turns that were opened together and answer at
                # once finish in the same loop turn (their SQLite commit included), so their
                # events are queued already; waiting one more loop turn only added latency.
                await self._wakeup.wait()
                self._wakeup.clear()
                if not self._ready:
                    continue
                response, finished = self._take_ready()
                try:
                    yield response
                finally:  # counted once their last event is written, or the call is gone
                    for _ in range(finished):
                        self._on_turn_closed()
        finally:
            reader.cancel()
            for turn in list(self._turns.values()):
                self._close(turn, STREAM_BROKEN)

    async def _read(self, requests: AsyncIterable[pb.ExchangeRequest]) -> None:
        try:
            async for request in requests:
                # Opens first: a turn opened and cancelled in one message (the caller gave up
                # on it while this worker was stalled) must end, not run for nobody.
                for opened in request.opens:
                    self._open(opened)
                for turn_id in request.cancels:
                    if (turn := self._turns.get(turn_id)) is not None:
                        self._close(turn)
                for credit in request.credits:
                    if (turn := self._turns.get(credit.turn_id)) is not None:
                        turn.credit += credit.events
                        self._mark_ready(turn)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            log.info("exchange: the caller's stream broke: %s", error)
        finally:
            # No credit can come any more: what is open runs to its end, paced by gRPC alone.
            self._reading = False
            for turn in self._turns.values():
                turn.credit = _UNLIMITED
                self._mark_ready(turn)
            self._wakeup.set()

    def _open(self, opened: pb.TurnOpen) -> None:
        if opened.turn_id in self._turns:
            return  # a caller bug; the first turn with this id keeps it
        turn = _Turn(opened.turn_id, opened.credit or EVENT_BUFFER)
        self._turns[turn.id] = turn
        self._on_turn_open()
        if self._draining():
            self._push(turn, _DRAINING, last=True)
            return
        turn.task = asyncio.create_task(self._produce(turn, opened.request))

    async def _produce(self, turn: _Turn, request: pb.RunTurnRequest) -> None:
        request_id_var.set(request.request_id or "-")
        try:
            async with aclosing(self._run_turn(request)) as events:
                async for event in events:
                    ending = isinstance(event, TurnFinished)
                    self._push(turn, event, last=ending)
                    if ending:
                        continue  # the runner still gets to finish (its lock, its metrics)
                    if len(turn.events) >= EVENT_BUFFER:
                        turn.room.clear()
                        await turn.room.wait()
        except TurnError as error:
            log.warning("turn failed: %s: %s", error.code.name, error.detail or error.message)
            self._push(turn, error, last=True)
        except Exception:
            log.exception("turn failed unexpectedly")
            failure = TurnError("the worker failed unexpectedly while running the turn")
            self._push(turn, failure, last=True)
        else:
            if not turn.ended:
                self._push(turn, TurnError("the turn ended without finishing"), last=True)

    def _push(self, turn: _Turn, event: TurnEvent | TurnError, *, last: bool) -> None:
        turn.events.append(event)
        turn.ended = last
        self._mark_ready(turn)

    def _mark_ready(self, turn: _Turn) -> None:
        if turn.events and turn.credit > 0 and self._turns.get(turn.id) is turn:
            self._ready[turn.id] = turn
            self._wakeup.set()

    def _take_ready(self) -> tuple[pb.ExchangeResponse, int]:
        response = pb.ExchangeResponse()
        finished = 0
        fill_event = self._fill_event
        for turn in self._ready.values():
            count = min(turn.credit, len(turn.events))
            turn.credit -= count
            batch = response.turns.add()
            batch.turn_id = turn.id
            add_event = batch.events.add
            for _ in range(count):
                fill_event(add_event(), turn.events.popleft())
            if turn.ended and not turn.events:
                del self._turns[turn.id]
                finished += 1
            elif len(turn.events) < EVENT_BUFFER:
                turn.room.set()
        self._ready = {
            turn_id: turn
            for turn_id, turn in self._ready.items()
            if turn.events and turn.credit > 0 and self._turns.get(turn_id) is turn
        }
        return response, finished

    def _close(self, turn: _Turn, why: str | None = None) -> None:
        """Aborts a turn whose caller is gone; nothing more of it is sent."""
        if self._turns.get(turn.id) is not turn:
            return
        del self._turns[turn.id]
        self._ready.pop(turn.id, None)
        if turn.task is not None:
            turn.task.cancel(why)
        self._on_turn_closed()

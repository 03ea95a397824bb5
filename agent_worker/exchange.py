"""The worker's side of `Exchange`: many turns over one stream, their events in shared messages.

Each turn runs in its own `TurnOutbox`; one sender takes whatever is ready across all turns,
within each turn's credit, and writes it as one message. Sharing messages is what makes the
stream pay off: a busy edge pays gRPC's per-message cost once for many turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable

import grpc

from agent_worker.errors import TurnError
from agent_worker.event_mapping import fill_event
from agent_worker.turn_outbox import EVENT_BUFFER, UNLIMITED, OpenTurns, RunTurn, TurnOutbox
from agent_worker.turn_runner import STREAM_BROKEN
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.credit import CreditWindow

log = logging.getLogger("clawgate.worker")
__all__ = ["EVENT_BUFFER", "DRAINING", "ExchangeCall"]
# What a turn runs: the proto request in, its events out (`Flushed` as in turn_outbox).
StartTurn = Callable[[pb.RunTurnRequest], RunTurn]


class _Draining(TurnError):
    code = grpc.StatusCode.UNAVAILABLE


DRAINING = _Draining("the worker is shutting down")


class ExchangeCall:
    """One open Exchange: reads opens, cancels and credits; yields shared event messages."""

    def __init__(self, start_turn: StartTurn, open_turns: OpenTurns) -> None:
        self._start_turn = start_turn
        self._open_turns = open_turns
        self._turns: dict[int, TurnOutbox] = {}
        self._ready: dict[int, TurnOutbox] = {}  # turns with events and credit to send them
        self._wakeup = asyncio.Event()
        self._reading = True
        self._writing = False  # a message is with gRPC

    async def responses(
        self, requests: AsyncIterable[pb.ExchangeRequest]
    ) -> AsyncGenerator[pb.ExchangeResponse, None]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while self._reading or self._turns:
                await self._wakeup.wait()
                self._wakeup.clear()
                if not self._ready:
                    continue
                response, sent = self._take_ready()
                if not sent:
                    continue
                self._writing = True
                try:
                    yield response
                finally:
                    self._writing = False
                    # A turn is closed once its last event is written, or the call is gone.
                    for outbox in sent:
                        if outbox.done:
                            self._open_turns.closed()
        finally:
            reader.cancel()
            for outbox in list(self._turns.values()):
                self._close(outbox, STREAM_BROKEN)

    async def _read(self, requests: AsyncIterable[pb.ExchangeRequest]) -> None:
        try:
            async for request in requests:
                # Opens first: a turn opened and cancelled in one message (the caller gave up
                # on it while this worker was stalled) must end, not run for nobody.
                for opened in request.opens:
                    self._open(opened)
                for turn_id in request.cancels:
                    if (outbox := self._turns.get(turn_id)) is not None:
                        self._close(outbox)
                for credit in request.credits:
                    if (outbox := self._turns.get(credit.turn_id)) is not None:
                        outbox.credit.grant(credit.events)
                        self._mark_ready(outbox)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            log.info("exchange: the caller's stream broke: %s", error)
        finally:
            # No credit can come any more: what is open runs to its end, paced by gRPC alone.
            self._reading = False
            for outbox in self._turns.values():
                outbox.credit.grant(UNLIMITED)
                self._mark_ready(outbox)
            self._wakeup.set()

    def _open(self, opened: pb.TurnOpen) -> None:
        if opened.turn_id in self._turns:
            return  # a caller bug; the first turn with this id keeps it
        credit = CreditWindow(opened.credit or EVENT_BUFFER)
        outbox = TurnOutbox(
            opened.turn_id,
            credit,
            self._mark_ready,
            whole_answer=opened.whole_answer,
            alone=self._alone,
        )
        self._turns[outbox.id] = outbox
        self._open_turns.opened()
        if self._open_turns.draining:
            outbox.end_with(DRAINING)
        else:
            outbox.start(self._start_turn(opened.request), opened.request.request_id)

    def _alone(self) -> bool:
        """No other turn is open on this worker and no message is being written (text queued
        while one is goes out in the next message anyway)."""
        return not self._writing and self._open_turns.alone()

    def _mark_ready(self, outbox: TurnOutbox) -> None:
        if self._turns.get(outbox.id) is outbox:
            self._ready[outbox.id] = outbox
            self._wakeup.set()

    def _take_ready(self) -> tuple[pb.ExchangeResponse, list[TurnOutbox]]:
        response = pb.ExchangeResponse()
        sent: list[TurnOutbox] = []
        for outbox in self._ready.values():
            if not outbox.ready:
                continue
            batch = response.turns.add()
            batch.turn_id = outbox.id
            add_event = batch.events.add
            for event in outbox.take():
                fill_event(add_event(), event)
            sent.append(outbox)
            if outbox.done:
                del self._turns[outbox.id]
        self._ready = {
            turn_id: outbox
            for turn_id, outbox in self._ready.items()
            if outbox.ready and self._turns.get(turn_id) is outbox
        }
        return response, sent

    def _close(self, outbox: TurnOutbox, why: str | None = None) -> None:
        """Aborts a turn whose caller is gone; nothing more of it is sent."""
        if self._turns.get(outbox.id) is not outbox:
            return
        del self._turns[outbox.id]
        self._ready.pop(outbox.id, None)
        outbox.cancel(why)
        self._open_turns.closed()

"""One running turn's events on their way to its caller, for both turn RPCs.

A `TurnOutbox` runs the turn in its own task and queues its events (as domain objects: the
transport writes them straight into its outgoing message). The transport takes what its caller's
credit allows, and hands what it took to gRPC in the same step. The runner waits on `flushed`
before its session write. When the turn runs alone on the worker, `flushed` returns once every
queued event has been taken, so the text is on its way before the store is touched (a future's
waiter resumes only after the step that set it, so the message has been handed over by then).
With other turns in flight it returns at once, like Nagle's rule: what is queued then waits and
rides with the finish after the write (a write takes a loop step: turns that end together share
its commit), and messages stay shared: a second message per turn would cost every busy stream
a message's overhead. It also returns at once for a caller that reads
whole answers, whose text waits for the finish from the start; its started event does not (the
edge moves a turn that has not started) unless it is still queued when the write begins, as for
an answer that came at once, which then leaves whole in one message. Once the queue holds
`EVENT_BUFFER` events the provider is paused until the caller catches up, and what waited goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator

from agent_worker.errors import TurnError
from agent_worker.events import TurnEvent, TurnFinished, TurnStarted
from agent_worker.turn_runner import Flushed
from services.credit import WINDOW, CreditWindow
from services.logging import request_id_var

log = logging.getLogger("clawgate.worker")
EVENT_BUFFER = WINDOW  # events a turn may run ahead of its caller before the provider is paused
UNLIMITED = 2**62
RunTurn = Callable[[Flushed], AsyncGenerator[TurnEvent, None]]
Outgoing = TurnEvent | TurnError
# What of a turn's queued events waits for its finish.
HOLD_NOTHING, HOLD_TEXT, HOLD_ALL = 0, 1, 2


class TurnOutbox:
    __slots__ = (
        "id",
        "credit",
        "events",
        "ended",
        "_task",
        "_room",
        "_on_ready",
        "_flush",
        "_hold",
        "_alone",
    )

    def __init__(
        self,
        turn_id: int,
        credit: CreditWindow,
        on_ready: Callable[[TurnOutbox], None],
        *,
        whole_answer: bool = False,
        alone: Callable[[], bool] = lambda: True,
    ) -> None:
        self.id = turn_id
        self.credit = credit
        self.events: deque[Outgoing] = deque()
        self.ended = False  # its last event is queued
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()  # set while the queue has room
        self._room.set()
        self._on_ready = on_ready  # called when it has events its credit lets go
        self._flush: asyncio.Future[None] | None = None  # resolved once all is taken
        # What waits for the finish; a caller that wants the whole answer never waits for text.
        self._hold = HOLD_TEXT if whole_answer else HOLD_NOTHING
        # Whether nothing else is in flight, so an extra message delays no one.
        self._alone = alone

    @property
    def ready(self) -> bool:
        return self.credit.room > 0 and self._sendable() > 0

    def _sendable(self) -> int:
        """How many of the queued events may go now: what waits for the finish does not."""
        events = self.events
        if self._hold == HOLD_NOTHING or self.ended or len(events) >= EVENT_BUFFER:
            return len(events)
        if self._hold == HOLD_TEXT and events and isinstance(events[0], TurnStarted):
            return 1  # the edge moves a turn that has not started: that news never waits
        return 0

    def start(self, run: RunTurn, request_id: str) -> None:
        self._task = asyncio.create_task(self._produce(run, request_id))

    def end_with(self, error: TurnError) -> None:
        self._push(error, last=True)

    def take(self) -> list[Outgoing]:
        """The events the credit lets go now, in order."""
        events = self.events
        count = self.credit.spend(self._sendable())
        taken = [events.popleft() for _ in range(count)]
        if len(events) < EVENT_BUFFER:
            self._room.set()
        flush = self._flush
        if flush is not None and not events:
            self._flush = None
            if not flush.done():
                flush.set_result(None)
        return taken

    @property
    def done(self) -> bool:
        """Its last event has been taken."""
        return self.ended and not self.events

    def cancel(self, why: str | None = None) -> None:
        if self._task is not None:
            self._task.cancel(why)

    async def _flushed(self) -> None:
        if self._hold != HOLD_NOTHING or not self._alone():
            self._hold = HOLD_ALL  # what is queued rides with the finish, after the write
            return
        if not self.events:
            return
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_future()
        await self._flush

    async def _produce(self, run: RunTurn, request_id: str) -> None:
        request_id_var.set(request_id or "-")
        try:
            async with contextlib.aclosing(run(self._flushed)) as events:
                async for event in events:
                    ending = isinstance(event, TurnFinished)
                    self._push(event, last=ending)
                    if ending:
                        continue  # the runner still gets to finish (its lock, its metrics)
                    if len(self.events) >= EVENT_BUFFER:
                        self._room.clear()
                        await self._room.wait()
        except TurnError as error:
            log.warning("turn failed: %s: %s", error.code.name, error.detail or error.message)
            self._push(error, last=True)
        except Exception:
            log.exception("turn failed unexpectedly")
            self._push(TurnError("the worker failed unexpectedly while running the turn"), True)
        else:
            if not self.ended:
                self._push(TurnError("the turn ended without finishing"), last=True)

    def _push(self, event: Outgoing, last: bool) -> None:
        self.events.append(event)
        self.ended = last
        if self.ready:
            self._on_ready(self)


class OpenTurns:
    """The worker's open turns, for a drain: new turns are refused once draining."""

    def __init__(self) -> None:
        self.draining = False
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def alone(self) -> bool:
        """At most one turn is open (the caller's own)."""
        return self._count <= 1

    def opened(self) -> None:
        self._count += 1
        self._idle.clear()

    def closed(self) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self.opened()
        try:
            yield
        finally:
            self.closed()

    async def wait_idle(self) -> None:
        """Returns once no turn is open (its last message written)."""
        await self._idle.wait()


async def batches_of_one_turn(
    run: RunTurn, request_id: str, alone: Callable[[], bool] = lambda: True
) -> AsyncGenerator[list[Outgoing], None]:
    """A turn's events as they become ready together, each batch written before the next is
    taken (what RunTurn sends as one message). The turn is cancelled if the caller stops."""
    ready = asyncio.Event()
    outbox = TurnOutbox(0, CreditWindow(UNLIMITED), lambda _: ready.set(), alone=alone)
    outbox.start(run, request_id)
    try:
        while not outbox.done:
            await ready.wait()
            ready.clear()
            if taken := outbox.take():  # none when what came meanwhile waits for the finish
                yield taken
    finally:
        if not outbox.done:  # the caller left early; a done turn still finishes its cleanup
            outbox.cancel()

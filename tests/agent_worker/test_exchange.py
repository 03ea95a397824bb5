"""ExchangeCall in-process: credit, cancel, draining and failures, as the edge drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from agent_worker.domain import FinishReason, TextDelta, TurnEvent, TurnFinished, TurnStarted, Usage
from agent_worker.errors import WorkerAtCapacityError
from agent_worker.exchange import EVENT_BUFFER, ExchangeCall
from agent_worker.servicer import fill_event
from clawgate.agent.v1 import agent_service_pb2 as pb

STARTED = TurnStarted(run_id="r", model="echo/echo")
FINISHED = TurnFinished(FinishReason.STOP, Usage(0, 0))


class Harness:
    """Feeds requests into one ExchangeCall and collects what it sends, per turn."""

    def __init__(self, words: int = 3, *, draining: bool = False, fail: bool = False) -> None:
        self.words = words
        self.draining = draining
        self.fail = fail
        self.open_turns = 0
        self.produced = 0
        self.cancelled = asyncio.Event()
        self.requests: asyncio.Queue[pb.ExchangeRequest | None] = asyncio.Queue()
        self.received: dict[int, list[pb.RunTurnEvent]] = {}
        self.call = ExchangeCall(
            self.events,
            fill_event,
            draining=lambda: self.draining,
            on_turn_open=self.opened,
            on_turn_closed=self.closed,
        )
        self.task = asyncio.create_task(self.collect())

    def opened(self) -> None:
        self.open_turns += 1

    def closed(self) -> None:
        self.open_turns -= 1

    async def events(self, request: pb.RunTurnRequest) -> AsyncGenerator[TurnEvent, None]:
        if self.fail:
            raise WorkerAtCapacityError("worker is at capacity")
        try:
            yield STARTED
            for index in range(self.words):
                self.produced += 1
                yield TextDelta(f"w{index} ")
            yield FINISHED
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise

    async def incoming(self) -> AsyncIterator[pb.ExchangeRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def collect(self) -> None:
        async for response in self.call.responses(self.incoming()):
            for turn in response.turns:
                self.received.setdefault(turn.turn_id, []).extend(turn.events)

    def send(self, **fields: object) -> None:
        self.requests.put_nowait(pb.ExchangeRequest(**fields))  # type: ignore[arg-type]

    def open(self, turn_id: int, credit: int = 0) -> None:
        self.send(opens=[pb.TurnOpen(turn_id=turn_id, request=pb.RunTurnRequest(), credit=credit)])

    def kinds(self, turn_id: int) -> list[str]:
        return [str(event.WhichOneof("event")) for event in self.received.get(turn_id, [])]

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def finish(self) -> None:
        self.requests.put_nowait(None)
        await asyncio.wait_for(self.task, 5)


async def test_turns_share_the_stream_and_each_ends_with_finished() -> None:
    harness = Harness()
    harness.send(
        opens=[pb.TurnOpen(turn_id=turn_id, request=pb.RunTurnRequest()) for turn_id in (1, 2)]
    )
    await harness.finish()
    for turn_id in (1, 2):
        assert harness.kinds(turn_id) == ["started", "delta", "delta", "delta", "finished"]
    assert harness.open_turns == 0


async def test_a_turn_sends_no_more_than_its_credit_until_more_is_given() -> None:
    harness = Harness(words=50)
    harness.open(7, credit=4)
    await harness.settle()
    assert len(harness.received[7]) == 4
    harness.send(credits=[pb.TurnCredit(turn_id=7, events=10)])
    await harness.settle()
    assert len(harness.received[7]) == 14
    harness.send(credits=[pb.TurnCredit(turn_id=7, events=100)])
    await harness.finish()
    assert harness.kinds(7)[-1] == "finished"
    assert len(harness.received[7]) == 52


async def test_a_reader_without_credit_pauses_its_provider() -> None:
    harness = Harness(words=EVENT_BUFFER * 4)
    harness.open(1, credit=1)
    await harness.settle()
    assert EVENT_BUFFER - 2 <= harness.produced <= EVENT_BUFFER + 1
    harness.send(cancels=[1])
    await harness.finish()


async def test_cancel_aborts_the_turn_and_nothing_more_is_sent() -> None:
    harness = Harness(words=EVENT_BUFFER * 4)
    harness.open(3, credit=2)
    await harness.settle()
    harness.send(cancels=[3, 99])  # an unknown id is ignored
    await asyncio.wait_for(harness.cancelled.wait(), 5)
    await harness.finish()
    assert len(harness.received[3]) == 2
    assert harness.open_turns == 0


async def test_a_draining_worker_refuses_new_turns_as_unavailable() -> None:
    harness = Harness(draining=True)
    harness.open(1)
    await harness.finish()
    (event,) = harness.received[1]
    assert event.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert harness.open_turns == 0


async def test_a_turn_refused_before_it_starts_ends_with_its_status_code() -> None:
    harness = Harness(fail=True)
    harness.open(1)
    await harness.finish()
    (event,) = harness.received[1]
    assert event.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "capacity" in event.error.message


async def test_turns_still_open_when_the_caller_leaves_are_cancelled() -> None:
    harness = Harness(words=EVENT_BUFFER * 4)
    harness.open(1, credit=1)
    await harness.settle()
    harness.task.cancel()  # what grpc does to the handler when its call is cancelled
    await asyncio.wait_for(harness.cancelled.wait(), 5)
    assert harness.open_turns == 0


async def test_once_the_caller_closes_its_side_open_turns_run_to_their_end() -> None:
    harness = Harness(words=EVENT_BUFFER * 2)
    harness.open(1, credit=1)
    await harness.settle()
    await harness.finish()
    assert len(harness.received[1]) == EVENT_BUFFER * 2 + 2
    assert harness.kinds(1)[-1] == "finished"

"""ExchangeCall in-process: credit, cancel, draining, failures and the flushed point, as the
edge drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from agent_worker.domain import FinishReason, Usage
from agent_worker.errors import WorkerAtCapacityError
from agent_worker.events import TextDelta, TurnEvent, TurnFinished, TurnStarted
from agent_worker.exchange import EVENT_BUFFER, ExchangeCall
from agent_worker.turn_outbox import OpenTurns, TurnOutbox, batches_of_one_turn
from agent_worker.turn_runner import Flushed
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.credit import CreditWindow

STARTED = TurnStarted(run_id="r", model="echo/echo")
FINISHED = TurnFinished(FinishReason.STOP, Usage(0, 0))


class Harness:
    """Feeds requests into one ExchangeCall and collects what it sends, per turn."""

    def __init__(self, words: int = 3, *, draining: bool = False, fail: bool = False) -> None:
        self.words = words
        self.draining = draining
        self.fail = fail
        self.turns = OpenTurns()
        self.turns.draining = draining
        self.produced = 0
        self.flushed_after: list[int] = []  # events the caller had when `flushed` returned
        self.cancelled = asyncio.Event()
        self.requests: asyncio.Queue[pb.ExchangeRequest | None] = asyncio.Queue()
        self.received: dict[int, list[pb.RunTurnEvent]] = {}
        self.call = ExchangeCall(lambda request: self.events, self.turns)
        self.task = asyncio.create_task(self.collect())

    @property
    def open_turns(self) -> int:
        return self.turns.count

    async def events(self, flushed: Flushed) -> AsyncGenerator[TurnEvent, None]:
        if self.fail:
            raise WorkerAtCapacityError("worker is at capacity")
        try:
            yield STARTED
            for index in range(self.words):
                self.produced += 1
                yield TextDelta(f"w{index} ")
            await flushed()
            self.flushed_after.append(sum(map(len, self.received.values())))
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
    assert event.error.status == pb.ERROR_CODE_UNAVAILABLE
    assert harness.open_turns == 0


async def test_a_turn_refused_before_it_starts_ends_with_its_status_code() -> None:
    harness = Harness(fail=True)
    harness.open(1)
    await harness.finish()
    (event,) = harness.received[1]
    assert event.error.status == pb.ERROR_CODE_RESOURCE_EXHAUSTED
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


async def test_flushed_returns_once_the_text_is_written_and_the_finish_follows() -> None:
    """The runner waits on `flushed` before its session write: the text must have left by then
    (it used to rely on one loop turn of `asyncio.sleep(0)` and on a stream hint)."""
    harness = Harness(words=3)
    harness.open(1)
    await harness.finish()
    assert harness.flushed_after == [4]  # started and three deltas were with the caller
    assert harness.kinds(1) == ["started", "delta", "delta", "delta", "finished"]


async def test_flushed_waits_for_credit_before_the_session_write() -> None:
    harness = Harness(words=5)
    harness.open(1, credit=2)
    await harness.settle()
    assert harness.flushed_after == []  # four events still wait for credit
    harness.send(credits=[pb.TurnCredit(turn_id=1, events=10)])
    await harness.finish()
    assert harness.flushed_after == [6]


async def test_a_whole_answer_turn_does_not_wait_for_its_text_to_leave() -> None:
    """Its caller reads the answer at the end, so text and finish may share one message."""
    harness = Harness(words=3)
    opened = pb.TurnOpen(turn_id=1, request=pb.RunTurnRequest(), whole_answer=True)
    harness.send(opens=[opened])
    await harness.finish()
    assert harness.flushed_after == [0]  # nothing had been sent when `flushed` returned
    assert harness.kinds(1) == ["started", "delta", "delta", "delta", "finished"]


async def test_flushed_waits_only_while_the_turn_is_alone() -> None:
    """With other turns in flight the text rides with the finish: waiting for it to leave cost a
    message per turn (10% of stream throughput at c=32). Alone, the extra message delays no one
    and the text never waits for the session write."""
    alone = False
    outbox = TurnOutbox(1, CreditWindow(), lambda _: None, alone=lambda: alone)
    flushed: list[bool] = []

    async def run(flush: Flushed) -> AsyncGenerator[TurnEvent, None]:
        yield TextDelta("a")
        await flush()
        flushed.append(True)
        yield FINISHED

    outbox.start(run, "r")
    for _ in range(5):
        await asyncio.sleep(0)
    assert flushed == [True]  # not alone: no wait
    alone = True
    flushed.clear()
    waiting = TurnOutbox(2, CreditWindow(), lambda _: None, alone=lambda: alone)
    waiting.start(run, "r")
    for _ in range(5):
        await asyncio.sleep(0)
    assert flushed == []  # alone: it waits until the text is taken
    assert [type(event) for event in waiting.take()] == [TextDelta]
    for _ in range(5):
        await asyncio.sleep(0)
    assert flushed == [True]


async def test_what_did_not_wait_is_held_until_the_finish_while_the_write_runs() -> None:
    """The session write takes a loop step (turns ending together share its commit): events that
    `flushed` let through without waiting must not leave alone meanwhile, or each turn costs
    two messages."""
    write = asyncio.get_running_loop().create_future()
    outbox = TurnOutbox(1, CreditWindow(), lambda _: None, alone=lambda: False)

    async def run(flush: Flushed) -> AsyncGenerator[TurnEvent, None]:
        yield STARTED
        yield TextDelta("a")
        await flush()
        await write
        yield FINISHED

    outbox.start(run, "r")
    for _ in range(5):
        await asyncio.sleep(0)
    assert not outbox.ready and outbox.take() == []  # all of it waits for the finish
    write.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert outbox.ready
    assert [type(event) for event in outbox.take()] == [TurnStarted, TextDelta, TurnFinished]


async def test_one_turn_batches_are_never_empty_when_what_came_waits_for_the_finish() -> None:
    """RunTurn's batches: the events that woke it can be held by the time it looks (the turn
    went on to its write), and an empty batch broke RunTurn (IndexError, found by the
    worker-alone bench)."""

    async def run(flush: Flushed) -> AsyncGenerator[TurnEvent, None]:
        yield STARTED
        yield TextDelta("a")
        await flush()
        await asyncio.sleep(0)  # the session write takes a loop step
        yield FINISHED

    batches = [batch async for batch in batches_of_one_turn(run, "r", alone=lambda: False)]
    assert all(batches)
    assert [type(event) for batch in batches for event in batch] == [
        TurnStarted,
        TextDelta,
        TurnFinished,
    ]


async def test_a_whole_answer_holds_its_text_but_not_its_start() -> None:
    """The edge moves a turn that has not started, so that news goes at once; the text waits
    for the finish, which its caller reads it with."""
    provider = asyncio.get_running_loop().create_future()
    outbox = TurnOutbox(1, CreditWindow(), lambda _: None, whole_answer=True)

    async def run(flush: Flushed) -> AsyncGenerator[TurnEvent, None]:
        yield STARTED
        await provider
        yield TextDelta("a")
        yield TextDelta("b")
        await provider  # the provider's finish: still streaming
        await flush()
        yield FINISHED

    outbox.start(run, "r")
    for _ in range(5):
        await asyncio.sleep(0)
    assert outbox.take() == [STARTED]
    provider.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert [type(event) for event in outbox.take()] == [TextDelta, TextDelta, TurnFinished]


async def test_turns_in_flight_together_send_text_and_finish_in_one_message() -> None:
    harness = Harness(words=3)
    harness.send(
        opens=[pb.TurnOpen(turn_id=turn_id, request=pb.RunTurnRequest()) for turn_id in (1, 2)]
    )
    await harness.finish()
    assert harness.flushed_after == [0, 0]  # neither waited for its text to leave
    for turn_id in (1, 2):
        assert harness.kinds(turn_id) == ["started", "delta", "delta", "delta", "finished"]

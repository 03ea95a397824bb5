"""WorkerLink against a real grpc.aio server on a random port: frames, credit, broken streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway_edge.worker_link import LinkFailure, WorkerLink
from services.credit import GIVE_BACK_BATCH, WINDOW


def started() -> pb.RunTurnEvent:
    return pb.RunTurnEvent(started=pb.TurnStarted(run_id="r"))


class ScriptedWorker(pb_grpc.AgentServiceServicer):
    """Answers each opened turn with `started` and records every frame the link sends."""

    def __init__(self) -> None:
        self.frames: list[pb.ExchangeRequest] = []
        self.hang_up = asyncio.Event()

    async def Exchange(  # noqa: N802
        self, requests: AsyncIterator[pb.ExchangeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExchangeResponse]:
        answers: asyncio.Queue[pb.ExchangeResponse] = asyncio.Queue()

        async def read() -> None:
            async for request in requests:
                self.frames.append(request)
                for opened in request.opens:
                    answers.put_nowait(
                        pb.ExchangeResponse(
                            turns=[pb.TurnEvents(turn_id=opened.turn_id, events=[started()])]
                        )
                    )

        reader = asyncio.create_task(read())
        hang_up = asyncio.create_task(self.hang_up.wait())
        try:
            while True:
                answer = asyncio.create_task(answers.get())
                done, _ = await asyncio.wait((answer, hang_up), return_when="FIRST_COMPLETED")
                if hang_up in done:
                    answer.cancel()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
                yield answer.result()
        finally:
            reader.cancel()
            hang_up.cancel()


@pytest.fixture
async def worker() -> AsyncIterator[tuple[ScriptedWorker, WorkerLink]]:
    server = grpc.aio.server()
    servicer = ScriptedWorker()
    pb_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    link = WorkerLink(pb_grpc.AgentServiceStub(channel), ())
    try:
        yield servicer, link
    finally:
        await link.close()
        await channel.close()
        await server.stop(None)


async def test_turns_opened_together_go_out_in_one_frame(
    worker: tuple[ScriptedWorker, WorkerLink],
) -> None:
    servicer, link = worker
    inboxes = [link.open_turn(pb.RunTurnRequest(session_key=f"s{n}")) for n in range(5)]
    for inbox in inboxes:
        (event,) = await asyncio.wait_for(inbox.next_events(), 5)
        assert event.HasField("started")
    first = servicer.frames[0]
    assert [opened.request.session_key for opened in first.opens] == [f"s{n}" for n in range(5)]
    assert {opened.credit for opened in first.opens} == {WINDOW}
    assert len({opened.turn_id for opened in first.opens}) == 5


async def test_taking_events_gives_credit_back_and_cancel_is_sent(
    worker: tuple[ScriptedWorker, WorkerLink],
) -> None:
    servicer, link = worker
    inbox = link.open_turn(pb.RunTurnRequest())
    await asyncio.wait_for(inbox.next_events(), 5)  # started: 1 event, no credit back yet
    delta = pb.RunTurnEvent(delta=pb.TextDelta(text="x"))
    inbox.deliver([delta] * (GIVE_BACK_BATCH - 1))
    await inbox.next_events()  # half the window taken: credit for all of it goes back
    await asyncio.sleep(0.05)
    inbox.cancel()
    for _ in range(100):
        if any(frame.cancels for frame in servicer.frames):
            break
        await asyncio.sleep(0.01)
    credits = [credit for frame in servicer.frames for credit in frame.credits]
    assert [(credit.turn_id, credit.events) for credit in credits] == [(inbox.id, GIVE_BACK_BATCH)]
    assert [list(frame.cancels) for frame in servicer.frames if frame.cancels] == [[inbox.id]]


async def test_a_whole_answer_reader_is_woken_once_and_gives_credit_as_events_arrive(
    worker: tuple[ScriptedWorker, WorkerLink],
) -> None:
    """A non-stream answer is read at its end: pieces before it wake nobody (a wake-up per
    message cost the edge ~10% at c=32), yet credit flows, or a long answer would stall."""
    servicer, link = worker
    inbox = link.open_turn(pb.RunTurnRequest())
    await asyncio.wait_for(inbox.next_events(), 5)  # started
    inbox.whole = True
    delta = pb.RunTurnEvent(delta=pb.TextDelta(text="x"))
    reader = asyncio.create_task(inbox.next_events())
    await asyncio.sleep(0.01)  # waiting
    for _ in range(3):
        inbox.deliver([delta] * GIVE_BACK_BATCH)
    await asyncio.sleep(0.05)
    assert not reader.done()
    for _ in range(100):
        credits = [credit.events for frame in servicer.frames for credit in frame.credits]
        if sum(credits) == 3 * GIVE_BACK_BATCH + 1:
            break
        await asyncio.sleep(0.01)
    assert sum(credits) == 3 * GIVE_BACK_BATCH + 1  # and the started event's
    inbox.ended = True  # as the reader marks the batch that ends the turn
    inbox.deliver([pb.RunTurnEvent(finished=pb.TurnFinished())])
    # Everything that queued comes in one read, in order.
    taken = await asyncio.wait_for(reader, 5)
    assert len(taken) == 3 * GIVE_BACK_BATCH + 1
    assert taken[-1].WhichOneof("event") == "finished"


async def test_a_broken_stream_fails_its_open_turns_and_the_next_turn_reconnects(
    worker: tuple[ScriptedWorker, WorkerLink],
) -> None:
    servicer, link = worker
    inbox = link.open_turn(pb.RunTurnRequest())
    await asyncio.wait_for(inbox.next_events(), 5)
    servicer.hang_up.set()
    with pytest.raises(LinkFailure) as failure:
        await asyncio.wait_for(inbox.next_events(), 5)
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
    servicer.hang_up.clear()
    again = link.open_turn(pb.RunTurnRequest())
    (event,) = await asyncio.wait_for(again.next_events(), 5)
    assert event.HasField("started")


async def test_a_wait_with_a_limit_returns_nothing_when_no_event_came(
    worker: tuple[ScriptedWorker, WorkerLink],
) -> None:
    _, link = worker
    inbox = link.open_turn(pb.RunTurnRequest())
    await asyncio.wait_for(inbox.next_events(), 5)  # started
    assert await asyncio.wait_for(inbox.next_events(0.05), 5) == ()
    inbox.cancel()

"""The worker's proto <-> domain conversions (wire.py), and one turn through a real servicer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest

from agent_worker.agents import AgentRegistry
from agent_worker.domain import ChatMessage, FinishReason, Image, Sampling, Usage
from agent_worker.errors import InvalidTurnError, SessionBusyError, TurnError
from agent_worker.event_mapping import fill_event
from agent_worker.events import TextDelta, TurnFinished, TurnStarted
from agent_worker.exchange import ExchangeCall
from agent_worker.proto_mapping import sampling_from_proto, turn_request_from_proto
from agent_worker.providers.registry import build_provider
from agent_worker.servicer import AgentServicer
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.config import parse_config


def test_unset_sampling_options_are_none() -> None:
    assert sampling_from_proto(pb.SamplingOptions()) == Sampling()


def test_every_sampling_option_is_read_and_zero_is_not_unset() -> None:
    options = pb.SamplingOptions(
        temperature=0.0,
        top_p=0.5,
        max_tokens=7,
        stop=["x", "y"],
        seed=0,
        presence_penalty=-1.0,
        frequency_penalty=1.5,
        response_format=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema='{"name": "s"}',
    )
    assert sampling_from_proto(options) == Sampling(
        temperature=0.0,
        top_p=0.5,
        max_tokens=7,
        stop=("x", "y"),
        seed=0,
        presence_penalty=-1.0,
        frequency_penalty=1.5,
        response_format="json_schema",
        json_schema='{"name": "s"}',
    )
    assert sampling_from_proto(pb.SamplingOptions(max_tokens=3)) == Sampling(max_tokens=3)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RunTurnRequest(input=pb.Message(role=9, text="hi")), "message role: 9"),  # type: ignore[arg-type]
        (
            pb.RunTurnRequest(
                input=pb.Message(role=pb.ROLE_USER, text="hi"),
                tool_choice=pb.ToolChoice(mode=7),  # type: ignore[arg-type]
            ),
            "tool_choice.mode: 7",
        ),
        (
            pb.RunTurnRequest(
                input=pb.Message(role=pb.ROLE_USER, text="hi"),
                sampling=pb.SamplingOptions(response_format=8),  # type: ignore[arg-type]
            ),
            "sampling.response_format: 8",
        ),
    ],
)
def test_an_enum_value_this_worker_does_not_know_is_refused_not_guessed(
    request_: pb.RunTurnRequest, field: str
) -> None:
    with pytest.raises(InvalidTurnError, match=field):
        turn_request_from_proto(request_)


def test_unset_enums_read_as_the_contract_says() -> None:
    turn = turn_request_from_proto(pb.RunTurnRequest(input=pb.Message(text="hi")))
    assert turn.input.role == "user" and turn.tool_choice.mode == "auto"
    assert turn.sampling.response_format is None


def test_a_turn_request_keeps_its_messages_images_and_flags() -> None:
    request = pb.RunTurnRequest(
        agent_id="main",
        session_key="k",
        input=pb.Message(
            role=pb.ROLE_USER, text="look", images=[pb.Image(media_type="image/png", data=b"1")]
        ),
        context=[pb.Message(role=pb.ROLE_ASSISTANT, text="before")],
        extra_system_prompt="be brief",
        request_id="r1",
        new_session=True,
    )
    turn = turn_request_from_proto(request)
    assert turn.input == ChatMessage("user", "look", (Image("image/png", b"1"),))
    assert turn.context == (ChatMessage("assistant", "before"),)
    assert (turn.agent_id, turn.session_key, turn.extra_system_prompt) == ("main", "k", "be brief")
    assert turn.request_id == "r1" and turn.new_session
    assert turn.sampling == Sampling()
    assert turn.channel_context == ()
    request.channel_context["x-openclaw-message-channel"] = "slack"
    assert turn_request_from_proto(request).channel_context == (
        ("x-openclaw-message-channel", "slack"),
    )


def filled(event: TextDelta | TurnStarted | TurnFinished | TurnError) -> pb.RunTurnEvent:
    target = pb.RunTurnEvent()
    fill_event(target, event)
    return target


def test_events_become_their_proto_kind() -> None:
    delta = filled(TextDelta("hi"))
    assert delta.WhichOneof("event") == "delta" and delta.delta.text == "hi"
    started = filled(TurnStarted("run", "m/x"))
    assert started.WhichOneof("event") == "started"
    assert (started.started.run_id, started.started.model) == ("run", "m/x")
    finished = filled(TurnFinished(FinishReason.LENGTH, Usage(3, 4)))
    assert finished.WhichOneof("event") == "finished"
    assert finished.finished.finish_reason == pb.FINISH_REASON_LENGTH
    usage = finished.finished.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 4, 7)
    error = filled(SessionBusyError("busy"))
    assert error.WhichOneof("event") == "error"
    assert (error.error.status, error.error.message) == (pb.ERROR_CODE_DEADLINE_EXCEEDED, "busy")
    assert error.error.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]  # gRPC's numbers


async def exchange_one_turn(
    tmp_path: Path, whole_answer: bool
) -> tuple[list[list[str]], list[str], list[str]]:
    """Runs one echo turn ("a b c") through a real servicer and SQLite store: the event kinds of
    each message, the order of store writes and messages, and the stored transcript."""
    config = parse_config(
        '{ sessions: { store: "sqlite:///' + str(tmp_path / "s.db") + '" },'
        ' models: { providers: { echo: { api: "echo", reply: "a b c" } } },'
        ' agents: { defaults: { model: "echo/e" } } }'
    )
    order: list[str] = []

    class RecordingStore(SqliteSessionStore):
        def append_turn(
            self,
            session_key: str,
            messages: Sequence[ChatMessage],
            origin: TurnOrigin = NO_ORIGIN,
        ) -> asyncio.Future[None]:
            written = super().append_turn(session_key, messages, origin)
            written.add_done_callback(lambda _: order.append("stored"))
            return written

    store = RecordingStore(tmp_path / "s.db")
    await store.open()
    agents = AgentRegistry.from_config(config)
    providers = {"echo": build_provider(config.models.providers["echo"])}
    runner = TurnRunner(agents, providers, store, max_concurrent_turns=4, session_wait_timeout=1)
    servicer = AgentServicer(runner, agents, store)
    request = pb.RunTurnRequest(
        agent_id="main", session_key="k", input=pb.Message(role=pb.ROLE_USER, text="hi")
    )

    async def one_open() -> AsyncIterator[pb.ExchangeRequest]:
        opened = pb.TurnOpen(turn_id=1, request=request, whole_answer=whole_answer)
        yield pb.ExchangeRequest(opens=[opened])

    messages: list[list[str]] = []
    exchange = ExchangeCall(servicer._start_turn, servicer.open_turns)
    async for response in exchange.responses(one_open()):
        order.append("message")
        messages.append([str(event.WhichOneof("event")) for event in response.turns[0].events])
    stored = [message.text for message in await store.load("k")]
    await store.close()
    return messages, order, stored


async def test_a_whole_answer_turn_is_stored_before_its_finish_goes_out_in_one_message(
    tmp_path: Path,
) -> None:
    """Its caller reads the answer once it is complete: an answer that is there at once goes
    out in one message after the write (which takes a loop step), not text first and the
    finish in a second message."""
    messages, order, stored = await exchange_one_turn(tmp_path, whole_answer=True)
    assert stored == ["hi", "a b c"]
    assert messages == [["started", "delta", "delta", "delta", "finished"]]
    assert order == ["stored", "message"]


async def test_a_turn_sends_its_text_before_the_write_and_its_finish_after(
    tmp_path: Path,
) -> None:
    """A reply that is complete at once used to wait for the write with its finish, which
    delayed a streaming client's first token by the write (measured in docs/performance.md).
    The runner waits on the transport's `flushed` point before the write."""
    messages, order, stored = await exchange_one_turn(tmp_path, whole_answer=False)
    assert stored == ["hi", "a b c"]
    assert messages == [["started", "delta", "delta", "delta"], ["finished"]]
    assert order == ["message", "stored", "message"]

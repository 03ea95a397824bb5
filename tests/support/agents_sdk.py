"""The OpenAI Agents SDK running a one-tool weather agent through clawgate (for the chat and
the Responses model tests)."""

from __future__ import annotations

from typing import Any

from agents import Agent, Model, Runner, function_tool, set_tracing_disabled


async def run_weather_agent(model: Model) -> tuple[list[str], Any]:
    """The cities the tool was called with, and the run's final output."""
    set_tracing_disabled(True)  # no network: traces would go to OpenAI
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    agent = Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather], model=model
    )
    result = await Runner.run(agent, "What is the weather in Paris?")
    return ran, result.final_output

"""One step of a turn: one answer of the model (after retries and fallbacks), as the caller
sees it while it streams, with its text, calls and finish collected for the turn."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import assert_never

from agent_worker.agents import Agent
from agent_worker.deadline import ProviderDeadline
from agent_worker.domain import ToolChoice
from agent_worker.errors import ContextOverflowError, ProviderFailedError
from agent_worker.events import ReasoningDelta, TextDelta, ToolCallDelta, TurnFinished
from agent_worker.metrics import WorkerMetrics
from agent_worker.model_chain import ModelChain
from agent_worker.providers.base import ProviderRequest
from agent_worker.tool_calls import ToolCalls

# Between the texts of two steps, so that "Let me check." and the answer do not run together.
STEP_SEPARATOR = "\n\n"

# What a step's caller sees of the provider's answer.
Shown = TextDelta | ReasoningDelta | ToolCallDelta


@dataclasses.dataclass(slots=True)
class Step:
    """One answer of the model: its text, its calls, its finish."""

    calls: ToolCalls
    parts: list[str] = dataclasses.field(default_factory=list)
    finished: TurnFinished | None = None


class ModelStep:
    """Asks the agent's models, one step at a time; `answered_by` is the model that answered
    the last step (a fallback's, when one did)."""

    def __init__(self, agent: Agent, models: ModelChain, metrics: WorkerMetrics) -> None:
        self._agent = agent
        self._models = models
        self._metrics = metrics
        self.answered_by = agent.model_ref

    async def ask(
        self, request: ProviderRequest, step: Step, separate: bool
    ) -> AsyncIterator[Shown]:
        """One step's answer as the caller sees it, as the provider gives it: text and the
        client's tool-call pieces; `step` collects them, the own calls and the finish.
        `separate`: an earlier step said something, so this step's text starts on its own.
        One generator, not two: every layer an event passes through costs each token."""
        choice = request.tool_choice
        # A forced tool choice holds the answer back until the call is confirmed: text that
        # went out could not be taken back when the model did not call the tool.
        held: list[Shown] | None = [] if choice.forces_a_call else None
        provider_name = self._agent.provider
        deadline = ProviderDeadline(self._agent.turn_timeout)
        asked = time.monotonic()
        try:
            # Retries and fallbacks happen before the first event; then the provider's stream.
            events, event, answering = await self._models.first_event(request, deadline)
            self.answered_by = answering.ref
            async with aclosing(events):
                while event is not None:
                    shown: Shown | None = None
                    match event:
                        case TextDelta():
                            if not step.parts:
                                self._metrics.provider_first_token_seconds_by(
                                    provider_name
                                ).observe(time.monotonic() - asked)
                            step.parts.append(event.text)
                            if separate:
                                separate = False
                                event = dataclasses.replace(event, text=STEP_SEPARATOR + event.text)
                            shown = event
                        case ReasoningDelta():
                            shown = event  # thinking is shown apart, never joined to the text
                        case ToolCallDelta():
                            shown = step.calls.add(event)
                        case TurnFinished():
                            step.finished = event
                        case _:
                            assert_never(event)
                    if shown is not None:
                        if held is None:
                            yield shown
                        else:
                            held.append(shown)
                    event = await deadline.wait_for(anext(events, None))
        except ContextOverflowError as overflow:  # the model that refused is learned, no other
            overflow.model_ref = overflow.model_ref or self.answered_by
            raise
        finally:
            deadline.cancel()
        self._metrics.provider_seconds_by(provider_name).observe(time.monotonic() - asked)
        if step.finished is None:
            raise ProviderFailedError("the provider ended its answer without finishing it")
        if not choice.satisfied_by(step.calls.whole()):
            raise ProviderFailedError(_unmet(choice))
        for event in held or ():
            yield event


def _unmet(choice: ToolChoice) -> str:
    if choice.mode == "function":
        return f"the model did not call the required tool {choice.function_name!r}"
    return "the model did not call a tool, and tool_choice is 'required'"

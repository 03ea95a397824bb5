"""The window one turn's prompts must fit: the agent's model's, until a model that refused a
prompt as too long says (or implies) a smaller one; and the share of it a prompt may take."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent_worker.agents import Agent
from agent_worker.compaction import reserve_tokens
from agent_worker.context_window import ContextWindows, TokenCounter
from agent_worker.errors import ContextOverflowError


class TurnWindow:
    def __init__(self, agent: Agent, windows: ContextWindows) -> None:
        self._agent = agent
        self._windows = windows
        self.tokens = self._agents_window()  # None: not known

    def _agents_window(self) -> int | None:
        agent = self._agent
        return self._windows.window(agent.provider, agent.model, agent.context_tokens)

    def counter(self) -> TokenCounter:
        return self._windows.counter(self._agent.provider, self._agent.model)

    def budget(self, window: int, answer_tokens: int | None) -> int:
        """What of `window` a prompt may take: the rest is kept for the answer."""
        agent = self._agent
        answer = answer_tokens or self._windows.limits(agent.provider, agent.model).max_tokens
        return window - reserve_tokens(window, answer, agent.compaction.reserve_tokens_floor)

    def answer_room(self, answer_tokens: int | None, prompt_tokens: int) -> int | None:
        """The most the answer may ask for beside a prompt of `prompt_tokens` (0: not counted):
        a larger `max_tokens` is capped, and the answer then ends with "length"."""
        window = self.tokens
        if answer_tokens is None or window is None or not prompt_tokens:
            return answer_tokens
        return max(min(answer_tokens, window - prompt_tokens), 1)

    def reported(self, estimate: int, prompt_tokens: int, answered_by: str) -> None:
        """The provider counted a prompt estimated at `estimate`: corrects the estimates when
        the model that answered is the one whose counter made them."""
        if estimate and answered_by == self._agent.model_ref:
            self.counter().observe(estimate, prompt_tokens)

    async def refused(
        self, error: ContextOverflowError, estimate_sent: Callable[[], Awaitable[int]]
    ) -> None:
        """A provider refused a prompt as too long: learns what it said, or what it implies, of
        the model that refused it (a fallback's window is not the primary's)."""
        agent, windows = self._agent, self._windows
        refused_by = error.model_ref or agent.model_ref
        provider, _, model = refused_by.partition("/")
        primary = refused_by == agent.model_ref
        known = windows.window(provider, model, agent.context_tokens if primary else None)
        if error.window:
            windows.learn(provider, model, error.window)
        elif known is None:  # the window is below what was sent: assume well below
            windows.learn(provider, model, max(await estimate_sent() * 3 // 4, 256))
        if primary and known is not None and (error.window is None or error.window >= known):
            self.counter().grow()  # the window was right: the estimate was low
        # This turn's next prompt must fit the model that refused, whichever that was.
        candidates = (self._agents_window(), windows.window(provider, model))
        self.tokens = min((window for window in candidates if window), default=None)

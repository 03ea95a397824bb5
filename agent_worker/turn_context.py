"""What the model sees of a session in one turn, kept inside the model's window.

The prompt is: the system prompt (with the latest summary after it), the session's messages
after that summary's cut, the client's new messages, the turn's input and the steps of its tool
loop. Before each model call `fit` checks it against the window less the answer's reserve and,
when it would not fit, in order: clips old tool results, compacts (a new summary of the oldest
messages, stored with the turn), and clips what is still too large. Only what the model sees is
cut; the stored transcript keeps every message. A turn whose input alone does not fit is
refused. See docs/sessions.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from agent_worker.agents import Agent
from agent_worker.compaction import (
    UNKNOWN_WINDOW,
    Summarizer,
    clipped_message,
    cut_point,
    reserve_tokens,
    summary_tokens,
)
from agent_worker.context_window import MESSAGE_OVERHEAD_TOKENS, ContextWindows, TokenCounter
from agent_worker.domain import ChatMessage, Compaction, StoredContext, Tool
from agent_worker.errors import ContextOverflowError, InputTooLargeError
from agent_worker.metrics import WorkerMetrics
from services import tracing
from services.logging import fingerprint

log = logging.getLogger("clawgate.worker.compaction")
SUMMARY_HEADING = "Summary of the earlier conversation:"
# A tool result older than the turn's input takes at most this share of the prompt budget.
_OLD_TOOL_RESULT_SHARE = 8
_MIN_CLIPPED = 32  # tokens: the least a clipped message keeps


class TurnContext:
    def __init__(
        self,
        agent: Agent,
        system: str,
        stored: StoredContext,
        new_context: Sequence[ChatMessage],
        turn_input: ChatMessage,
        windows: ContextWindows,
        summarizer: Summarizer,
        metrics: WorkerMetrics,
        session_key: str,
    ) -> None:
        self._agent = agent
        self._system = system
        self._history = [*stored.messages, *new_context]  # what a summary may stand for
        self._first = stored.first_position  # the session position of _history[0]
        self._input = turn_input
        self._windows = windows
        self._summarizer = summarizer
        self._metrics = metrics
        self._session_key = session_key
        self.compaction = stored.compaction  # the summary the prompt carries
        self.made: Compaction | None = None  # a compaction this turn made, stored with it
        self.estimate = 0  # the last prompt's estimated tokens (0: not counted)
        self._window_tokens = self._known_window()

    @property
    def history_size(self) -> int:
        return len(self._history)

    def messages(self, steps: Sequence[ChatMessage] = ()) -> tuple[ChatMessage, ...]:
        system = self._system_text()
        head = (ChatMessage("system", system),) if system else ()
        return (*head, *self._history, self._input, *steps)

    def _system_text(self) -> str:
        if self.compaction is None:
            return self._system
        summary = f"{SUMMARY_HEADING}\n{self.compaction.summary}"
        return f"{self._system}\n\n{summary}" if self._system else summary

    def _known_window(self) -> int | None:
        agent = self._agent
        return self._windows.window(agent.provider, agent.model, agent.context_tokens)

    def _counter(self) -> TokenCounter:
        return self._windows.counter(self._agent.provider, self._agent.model)

    def _budget(self, window: int, answer_tokens: int | None) -> int:
        agent = self._agent
        answer = answer_tokens or self._windows.limits(agent.provider, agent.model).max_tokens
        return window - reserve_tokens(window, answer, agent.compaction.reserve_tokens_floor)

    async def fit(
        self,
        steps: Sequence[ChatMessage],
        tools: tuple[Tool, ...],
        answer_tokens: int | None,
        trigger: str = "budget",
    ) -> tuple[ChatMessage, ...]:
        """The prompt for the next model call, within the window when it is known."""
        window = self._window_tokens
        if window is None or not self._agent.compaction.enabled:
            return self.messages(steps)
        counter = self._counter()
        budget = self._budget(window, answer_tokens)
        fixed = self._fixed_tokens(counter, tools, window, budget)
        steps = list(steps)
        total = self._count(counter, steps, tools)
        forced = trigger != "budget"
        if total <= budget and not forced:
            self.estimate = total
            return self.messages(steps)
        before = total
        started = time.monotonic()
        self._prune_old_tool_results(counter, budget)
        total = self._count(counter, steps, tools)
        compacted = False
        if total > budget or forced:
            steps_tokens = counter.messages(steps)
            allowance = summary_tokens(budget)
            room = budget - fixed - allowance - steps_tokens
            keep = min(self._agent.compaction.keep_recent_tokens, max(room, 0) // 2)
            if forced:
                keep //= 2
            compacted = await self._compact(counter, keep, allowance, trigger)
            total = self._count(counter, steps, tools)
        if total > budget:
            steps = self._clip_to(counter, steps, total - budget)
            total = self._count(counter, steps, tools)
        self.estimate = total
        if compacted:
            self._made(before, total)
            log.info(
                "compacted: agent=%s session=%s covers=%d tokens %d -> %d (window %d), %.0f ms",
                self._agent.id,
                fingerprint(self._session_key),
                self._first,
                before,
                total,
                window,
                (time.monotonic() - started) * 1000,
            )
        return self.messages(steps)

    def check_input(self, tools: tuple[Tool, ...], answer_tokens: int | None) -> None:
        """Refuses, before the turn starts, an input that alone cannot fit the window."""
        window = self._window_tokens
        if window is not None and self._agent.compaction.enabled:
            counter = self._counter()
            self._fixed_tokens(counter, tools, window, self._budget(window, answer_tokens))

    def _fixed_tokens(
        self, counter: TokenCounter, tools: tuple[Tool, ...], window: int, budget: int
    ) -> int:
        """What every prompt of the turn holds (system prompt, tools, input); a client tool's
        result too large for the budget is clipped, any other input refused."""
        fixed = counter.tools(tools) + counter.message(self._input)
        fixed += counter.message(ChatMessage("system", self._system)) if self._system else 0
        if fixed > budget and self._input.role == "tool":
            # A client tool's result is data, not the user's words: clipped like old ones.
            room = budget - fixed + counter.message(self._input)
            text_room = max(room - MESSAGE_OVERHEAD_TOKENS, _MIN_CLIPPED)
            self._input = clipped_message(self._input, text_room, counter)
            fixed = budget - room + counter.message(self._input)
        if fixed > budget:
            raise InputTooLargeError(
                f"This model's maximum context length is {window} tokens, of which {budget}"
                f" can hold a prompt (the rest is kept for the answer). Your message has about"
                f" {counter.message(self._input)} tokens ({fixed} with the system prompt and"
                " tools): send a shorter one."
            )
        return fixed

    async def compact_now(self, instructions: str = "") -> Compaction | None:
        """Manual compaction: summarises everything before the last exchange, window known or
        not; None when there is nothing before it."""
        counter = self._counter()
        budget = self._budget(self._window_tokens or UNKNOWN_WINDOW, None)
        before = self._count(counter, (), ())
        last_user = max(
            (index for index, message in enumerate(self._history) if message.role == "user"),
            default=0,
        )
        summary = summary_tokens(budget)
        if await self._compact(counter, 0, summary, "manual", instructions, last_user):
            self._made(before, self._count(counter, (), ()))
        return self.made

    def overflowed(
        self, error: ContextOverflowError, sent: Sequence[ChatMessage], tools: tuple[Tool, ...]
    ) -> None:
        """The provider refused `sent` as too long: learn what it said, or what it implies."""
        agent = self._agent
        known = self._window_tokens
        counter = self._counter()
        if error.window:
            self._windows.learn(agent.provider, agent.model, error.window)
        elif known is None:  # the window is below what was sent: assume well below
            estimate = counter.messages(sent) + counter.tools(tools)
            self._windows.learn(agent.provider, agent.model, max(estimate * 3 // 4, 256))
        if known is not None and (error.window is None or error.window >= known):
            counter.grow()  # the window was right: the estimate was low
        self._window_tokens = self._known_window()

    def reported(self, prompt_tokens: int) -> None:
        """The provider counted the last prompt: correct the estimates."""
        if self.estimate:
            self._counter().observe(self.estimate, prompt_tokens)

    def _count(
        self, counter: TokenCounter, steps: Sequence[ChatMessage], tools: tuple[Tool, ...]
    ) -> int:
        return counter.messages(self.messages(steps)) + counter.tools(tools)

    def _prune_old_tool_results(self, counter: TokenCounter, budget: int) -> None:
        limit = max(budget // _OLD_TOOL_RESULT_SHARE, _MIN_CLIPPED)
        self._history = [
            clipped_message(message, limit, counter) if message.role == "tool" else message
            for message in self._history
        ]

    async def _compact(
        self,
        counter: TokenCounter,
        keep: int,
        allowance: int,
        trigger: str,
        instructions: str = "",
        cut_at_most: int | None = None,
    ) -> bool:
        """Summarises the history before the kept tail into the prompt's compaction; whether
        there was anything to summarise."""
        cut = cut_point(self._history, counter, keep)
        if cut_at_most is not None:
            cut = min(cut, cut_at_most)
        if cut == 0:
            return False
        previous = self.compaction.summary if self.compaction else ""
        attributes: tracing.Attributes = {
            "clawgate.compaction.trigger": trigger,
            "clawgate.compaction.messages": cut,
        }
        with tracing.span("compaction", attributes=attributes):
            summary = await self._summarizer.summarize(
                self._agent, previous, self._history[:cut], allowance, instructions
            )
        self._history = self._history[cut:]
        self._first += cut
        self.compaction = Compaction(self._first, summary)
        self._metrics.compactions_by(self._agent.id, trigger).inc()
        return True

    def _made(self, tokens_before: int, tokens_after: int) -> None:
        """The compaction in the prompt now is this turn's, to be stored with it."""
        assert self.compaction is not None
        self.made = dataclasses.replace(
            self.compaction, tokens_before=tokens_before, tokens_after=tokens_after
        )

    def _clip_to(
        self, counter: TokenCounter, steps: list[ChatMessage], excess: int
    ) -> list[ChatMessage]:
        """Clips the largest messages (history and steps) until `excess` tokens are gone."""
        pool = [*self._history, *steps]
        for _ in range(len(pool)):
            if excess <= 0:
                break
            index = max(range(len(pool)), key=lambda at: counter.message(pool[at]), default=-1)
            if index < 0:
                break
            tokens = counter.message(pool[index])
            clipped = clipped_message(pool[index], max(tokens - excess, _MIN_CLIPPED), counter)
            if clipped is pool[index]:
                break
            excess -= tokens - counter.message(clipped)
            pool[index] = clipped
        self._history = pool[: len(self._history)]
        return pool[len(self._history) :]

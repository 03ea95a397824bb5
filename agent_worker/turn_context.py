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
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from agent_worker.agents import Agent
from agent_worker.compaction import (
    UNKNOWN_WINDOW,
    Summarizer,
    UsageRecorder,
    cut_point,
    summary_tokens,
)
from agent_worker.context_window import ContextWindows, TurnCounts
from agent_worker.domain import ChatMessage, Compaction, StoredContext, Tool
from agent_worker.errors import ContextOverflowError, InputTooLargeError
from agent_worker.light_prompts import is_light
from agent_worker.metrics import WorkerMetrics
from agent_worker.prompt_trim import largest_clipped, old_tool_results_clipped, tool_result_within
from agent_worker.turn_window import TurnWindow
from services import tracing
from services.logging import fingerprint
from services.off_loop import OffLoop
from services.spans import Attributes

log = logging.getLogger("clawgate.worker.compaction")
SUMMARY_HEADING = "Summary of the earlier conversation:"


@dataclass(frozen=True, slots=True)
class _Compact:
    """A prompt over its budget: what to keep verbatim and the summary's share."""

    tokens_before: int
    keep: int
    allowance: int


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
        off_loop: OffLoop,
        on_usage: UsageRecorder | None = None,
    ) -> None:
        self._agent = agent
        self._system = system
        self._history = [*stored.messages, *new_context]  # what a summary may stand for
        self._first = stored.first_position  # the session position of _history[0]
        self.stored_length = stored.last_position  # the session's length as read
        self._input = turn_input
        self._window = TurnWindow(agent, windows)
        self._summarizer = summarizer
        self._metrics = metrics
        self._session_key = session_key
        self._off_loop = off_loop
        self._on_usage = on_usage  # told each summary call's usage
        self.compaction = stored.compaction  # the summary the prompt carries
        self.made: Compaction | None = None  # a compaction this turn made, stored with it
        self.estimate = 0  # the last prompt's estimated tokens (0: not counted)

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

    def answer_room(self, answer_tokens: int | None) -> int | None:
        """The most the answer may ask for beside the last prompt (see TurnWindow)."""
        return self._window.answer_room(answer_tokens, self.estimate)

    @functools.cached_property
    def _counts(self) -> TurnCounts:
        return TurnCounts(self._window.counter())

    @functools.cached_property
    def _light(self) -> bool:
        """Whether this turn's prompt work runs in place (see OffLoop); steps are apart."""
        prompt = chain((ChatMessage("system", self._system), self._input), self._history)
        return is_light(prompt, self._counts.counter.tokenized)

    def _is_light(self, steps: Sequence[ChatMessage]) -> bool:
        return self._light and is_light(steps, self._counts.counter.tokenized)

    async def fit(
        self,
        steps: Sequence[ChatMessage],
        tools: tuple[Tool, ...],
        answer_tokens: int | None,
        trigger: str = "budget",
    ) -> tuple[ChatMessage, ...]:
        """The prompt for the next model call, within the window when it is known."""
        window = self._window.tokens
        if window is None or not self._agent.compaction.enabled:
            return self.messages(steps)
        light = self._is_light(steps)
        budget = self._window.budget(window, answer_tokens)
        started = time.monotonic()
        forced = trigger != "budget"
        plan = await self._off_loop.run(light, self._measure, steps, tools, window, budget, forced)
        if not isinstance(plan, _Compact):
            return plan
        compacted = await self._compact(plan.keep, plan.allowance, trigger, light)
        prompt = await self._off_loop.run(light, self._clipped, steps, tools, budget)
        if compacted:
            self._made(plan.tokens_before, self.estimate)
            log.info(
                "compacted: agent=%s session=%s covers=%d tokens %d -> %d (window %d), %.0f ms",
                self._agent.id,
                fingerprint(self._session_key),
                self._first,
                plan.tokens_before,
                self.estimate,
                window,
                (time.monotonic() - started) * 1000,
            )
        return prompt

    def _measure(
        self,
        steps: Sequence[ChatMessage],
        tools: tuple[Tool, ...],
        window: int,
        budget: int,
        forced: bool,
    ) -> tuple[ChatMessage, ...] | _Compact:
        """The prompt when it fits (old tool results clipped if need be), else what a
        compaction must keep."""
        fixed = self._fixed_tokens(tools, window, budget)
        total = self._count(steps, tools)
        if total <= budget and not forced:
            self.estimate = total
            return self.messages(steps)
        before = total
        self._history = old_tool_results_clipped(self._history, budget, self._counts)
        total = self._count(steps, tools)
        if total <= budget and not forced:
            self.estimate = total
            return self.messages(steps)
        allowance = summary_tokens(budget)
        room = budget - fixed - allowance - self._counts.messages(steps)
        keep = min(self._agent.compaction.keep_recent_tokens, max(room, 0) // 2)
        return _Compact(before, keep // 2 if forced else keep, allowance)

    def _clipped(
        self, steps: Sequence[ChatMessage], tools: tuple[Tool, ...], budget: int
    ) -> tuple[ChatMessage, ...]:
        """The prompt, its largest messages clipped while it is over the budget."""
        total = self._count(steps, tools)
        if total > budget:
            self._history, steps = largest_clipped(
                self._history, steps, total - budget, self._counts
            )
            total = self._count(steps, tools)
        self.estimate = total
        return self.messages(steps)

    async def counted(self, steps: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        """The next prompt's tokens: fit's count when it made one, else counted now."""
        if self.estimate and self._window.tokens is not None and self._agent.compaction.enabled:
            return self.estimate
        return await self._off_loop.run(self._is_light(steps), self._count, steps, tools)

    async def check_input(self, tools: tuple[Tool, ...], answer_tokens: int | None) -> None:
        """Refuses, before the turn starts, an input that alone cannot fit the window."""
        window = self._window.tokens
        if window is not None and self._agent.compaction.enabled:
            budget = self._window.budget(window, answer_tokens)
            light = self._is_light(())
            await self._off_loop.run(light, self._fixed_tokens, tools, window, budget)

    def _fixed_tokens(self, tools: tuple[Tool, ...], window: int, budget: int) -> int:
        """What every prompt of the turn holds (system prompt, tools, input); a client tool's
        result too large for the budget is clipped, any other input refused."""
        counts = self._counts
        fixed = counts.tools(tools) + counts.message(self._input)
        fixed += counts.message(ChatMessage("system", self._system)) if self._system else 0
        if fixed > budget and self._input.role == "tool":
            room = budget - fixed + counts.message(self._input)
            self._input = tool_result_within(self._input, room, counts)
            fixed = budget - room + counts.message(self._input)
        if fixed > budget:
            raise InputTooLargeError(
                f"This model's maximum context length is {window} tokens, of which {budget}"
                f" can hold a prompt (the rest is kept for the answer). Your message has about"
                f" {counts.message(self._input)} tokens ({fixed} with the system prompt and"
                " tools): send a shorter one."
            )
        return fixed

    async def compact_now(self, instructions: str = "") -> Compaction | None:
        """Manual compaction: summarises everything before the last exchange, window known or
        not; None when there is nothing before it."""
        budget = self._window.budget(self._window.tokens or UNKNOWN_WINDOW, None)
        light = self._is_light(())
        before = await self._off_loop.run(light, self._count, (), ())
        last_user = max(
            (index for index, message in enumerate(self._history) if message.role == "user"),
            default=0,
        )
        summary = summary_tokens(budget)
        if await self._compact(0, summary, "manual", light, instructions, last_user):
            self._made(before, await self._off_loop.run(light, self._count, (), ()))
        return self.made

    async def overflowed(
        self, error: ContextOverflowError, sent: Sequence[ChatMessage], tools: tuple[Tool, ...]
    ) -> None:
        """The provider refused `sent` as too long: the next prompt fits what that implies."""

        async def estimate_sent() -> int:
            return await self._off_loop.run(self._is_light(sent), self._count_of, sent, tools)

        await self._window.refused(error, estimate_sent)

    def _count_of(self, prompt: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        return self._counts.messages(prompt) + self._counts.tools(tools)

    def reported(self, prompt_tokens: int, answered_by: str) -> None:
        self._window.reported(self.estimate, prompt_tokens, answered_by)

    def _count(self, steps: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        return self._count_of(self.messages(steps), tools)

    async def _compact(
        self,
        keep: int,
        allowance: int,
        trigger: str,
        light: bool,
        instructions: str = "",
        cut_at_most: int | None = None,
    ) -> bool:
        """Summarises the history before the kept tail into the prompt's compaction; whether
        there was anything to summarise."""
        cut = await self._off_loop.run(light, cut_point, self._history, self._counts, keep)
        if cut_at_most is not None:
            cut = min(cut, cut_at_most)
        if cut == 0:
            return False
        previous = self.compaction.summary if self.compaction else ""
        attributes: Attributes = {
            "clawgate.compaction.trigger": trigger,
            "clawgate.compaction.messages": cut,
        }
        with tracing.span("compaction", attributes=attributes):
            summary = await self._summarizer.summarize(
                self._agent, previous, self._history[:cut], allowance, instructions, self._on_usage
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

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
    clipped_message,
    cut_point,
    reserve_tokens,
    summary_tokens,
)
from agent_worker.context_window import (
    MESSAGE_OVERHEAD_TOKENS,
    ContextWindows,
    TokenCounter,
    TurnCounts,
)
from agent_worker.domain import ChatMessage, Compaction, StoredContext, Tool
from agent_worker.errors import ContextOverflowError, InputTooLargeError
from agent_worker.light_prompts import is_light
from agent_worker.metrics import WorkerMetrics
from services import tracing
from services.logging import fingerprint
from services.off_loop import OffLoop

log = logging.getLogger("clawgate.worker.compaction")
SUMMARY_HEADING = "Summary of the earlier conversation:"
# A tool result older than the turn's input takes at most this share of the prompt budget.
_OLD_TOOL_RESULT_SHARE = 8
_MIN_CLIPPED = 32  # tokens: the least a clipped message keeps


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
        self._windows = windows
        self._summarizer = summarizer
        self._metrics = metrics
        self._session_key = session_key
        self._off_loop = off_loop
        self._on_usage = on_usage  # told each summary call's usage
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

    def answer_room(self, answer_tokens: int | None) -> int | None:
        """The most the answer may ask for beside the last prompt: a `max_tokens` larger than
        what the window can hold is capped (the answer then ends with "length")."""
        window = self._window_tokens
        if answer_tokens is None or window is None or not self.estimate:
            return answer_tokens
        return max(min(answer_tokens, window - self.estimate), 1)

    @functools.cached_property
    def _counts(self) -> TurnCounts:
        return TurnCounts(self._counter())

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
        window = self._window_tokens
        if window is None or not self._agent.compaction.enabled:
            return self.messages(steps)
        light = self._is_light(steps)
        budget = self._budget(window, answer_tokens)
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
        self._prune_old_tool_results(budget)
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
            steps = self._clip_to(list(steps), total - budget)
            total = self._count(steps, tools)
        self.estimate = total
        return self.messages(steps)

    async def counted(self, steps: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        """The next prompt's tokens: fit's count when it made one, else counted now."""
        if self.estimate and self._window_tokens is not None and self._agent.compaction.enabled:
            return self.estimate
        return await self._off_loop.run(self._is_light(steps), self._count, steps, tools)

    async def check_input(self, tools: tuple[Tool, ...], answer_tokens: int | None) -> None:
        """Refuses, before the turn starts, an input that alone cannot fit the window."""
        window = self._window_tokens
        if window is not None and self._agent.compaction.enabled:
            budget = self._budget(window, answer_tokens)
            light = self._is_light(())
            await self._off_loop.run(light, self._fixed_tokens, tools, window, budget)

    def _fixed_tokens(self, tools: tuple[Tool, ...], window: int, budget: int) -> int:
        """What every prompt of the turn holds (system prompt, tools, input); a client tool's
        result too large for the budget is clipped, any other input refused."""
        counts = self._counts
        fixed = counts.tools(tools) + counts.message(self._input)
        fixed += counts.message(ChatMessage("system", self._system)) if self._system else 0
        if fixed > budget and self._input.role == "tool":
            # A client tool's result is data, not the user's words: clipped like old ones.
            room = budget - fixed + counts.message(self._input)
            text_room = max(room - MESSAGE_OVERHEAD_TOKENS, _MIN_CLIPPED)
            self._input = clipped_message(self._input, text_room, counts)
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
        budget = self._budget(self._window_tokens or UNKNOWN_WINDOW, None)
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
        """The provider refused `sent` as too long: learn what it said, or what it implies, of
        the model that refused it (a fallback's window is not the primary's)."""
        agent = self._agent
        refused_by = error.model_ref or agent.model_ref
        provider, _, model = refused_by.partition("/")
        primary = refused_by == agent.model_ref
        known = self._windows.window(provider, model, agent.context_tokens if primary else None)
        if error.window:
            self._windows.learn(provider, model, error.window)
        elif known is None:  # the window is below what was sent: assume well below
            light = self._is_light(sent)
            estimate = await self._off_loop.run(light, self._count_of, sent, tools)
            self._windows.learn(provider, model, max(estimate * 3 // 4, 256))
        if primary and known is not None and (error.window is None or error.window >= known):
            self._counter().grow()  # the window was right: the estimate was low
        windows = (self._known_window(), self._windows.window(provider, model))
        # This turn's next prompt must fit the model that refused, whichever that was.
        self._window_tokens = min((window for window in windows if window), default=None)

    def _count_of(self, prompt: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        return self._counts.messages(prompt) + self._counts.tools(tools)

    def reported(self, prompt_tokens: int, answered_by: str) -> None:
        """The provider counted the last prompt: correct the estimates, when the model that
        answered is the one whose counter made them."""
        if self.estimate and answered_by == self._agent.model_ref:
            self._counter().observe(self.estimate, prompt_tokens)

    def _count(self, steps: Sequence[ChatMessage], tools: tuple[Tool, ...]) -> int:
        return self._count_of(self.messages(steps), tools)

    def _prune_old_tool_results(self, budget: int) -> None:
        limit = max(budget // _OLD_TOOL_RESULT_SHARE, _MIN_CLIPPED)
        counts = self._counts
        self._history = [
            clipped_message(message, limit, counts) if message.role == "tool" else message
            for message in self._history
        ]

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
        attributes: tracing.Attributes = {
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

    def _clip_to(self, steps: list[ChatMessage], excess: int) -> list[ChatMessage]:
        """Clips the largest messages (history and steps), largest first, until `excess`
        tokens are gone: one pass in size order, so clipping stays linear in the messages."""
        counts = self._counts
        pool = [*self._history, *steps]
        by_size = sorted(range(len(pool)), key=lambda at: counts.message(pool[at]), reverse=True)
        for index in by_size:
            if excess <= 0:
                break
            tokens = counts.message(pool[index])
            clipped = clipped_message(pool[index], max(tokens - excess, _MIN_CLIPPED), counts)
            if clipped is pool[index]:
                continue  # nothing of its text can go (its size is in its tool calls)
            excess -= tokens - counts.message(clipped)
            pool[index] = clipped
        self._history = pool[: len(self._history)]
        return pool[len(self._history) :]

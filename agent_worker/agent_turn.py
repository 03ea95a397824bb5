"""One agent turn once it holds its session: the prompt from history, the model's answer, the
agent's own tools run in a loop, and the transcript written.

Each step asks the model with the client's tools and the agent's own (MCP) tools. When the model
calls own tools, they run here (one step's calls together), their results go back to the model
and the next step begins; the turn ends when the model answers, calls a client tool (the turn
then ends with `tool_calls` for the client, as without own tools), or after `tools.maxSteps`
steps. Own calls are never shown to the client as `tool_calls`: it sees their progress as
ToolRunStarted / ToolRunFinished events, and the transcript keeps every step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from agent_worker.agent_tools import AgentTools
from agent_worker.agents import Agent, merged_sampling
from agent_worker.cache_trace import CacheTrace
from agent_worker.compaction import Summarizer
from agent_worker.context_window import ContextWindows
from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Tool,
    ToolCall,
    ToolChoice,
    TurnRequest,
    Usage,
    identity_of,
)
from agent_worker.errors import ContextOverflowError, OverBudgetError
from agent_worker.events import TurnEvent, TurnFinished, TurnStarted
from agent_worker.metrics import WorkerMetrics
from agent_worker.model_chain import ModelChain
from agent_worker.model_step import ModelStep, Step
from agent_worker.providers.base import ProviderRequest
from agent_worker.sessions.store import SessionStore, TurnOrigin
from agent_worker.tool_calls import ToolCalls
from agent_worker.turn_session import ContextParts, open_context, store_turn
from agent_worker.usage import TurnUsage, UsageMeter
from services.ids import random_hex
from services.logging import fingerprint
from services.off_loop import OffLoop

log = logging.getLogger("clawgate.worker.turns")
# The transport's word that the turn's text so far has been written to its caller.
Flushed = Callable[[], Awaitable[None]]


async def nothing_to_flush() -> None:
    return None


class AgentTurn:
    def __init__(
        self,
        request: TurnRequest,
        agent: Agent,
        models: ModelChain,
        store: SessionStore,
        tools: AgentTools | None,
        metrics: WorkerMetrics,
        windows: ContextWindows,
        summarizer: Summarizer,
        off_loop: OffLoop,
        meter: UsageMeter,
        cache_trace: CacheTrace | None = None,
    ) -> None:
        self._cache_trace = cache_trace
        self._off_loop = off_loop
        self._usage = TurnUsage(meter, agent.id)
        self._windows = windows
        self._context_parts = ContextParts(windows, summarizer, metrics, off_loop, self._usage.add)
        self._request = request
        self._agent = agent
        self._model = ModelStep(agent, models, metrics)
        self._provider = models.primary
        self._store = store
        self._tools = tools
        self._metrics = metrics
        # The session's prompt cache key: a digest, so no identity in a session key leaves.
        digest = hashlib.sha256(f"{agent.id}\0{request.session_key}".encode()).hexdigest()
        self._cache_key = f"clawgate-{digest[:32]}"

    async def events(self, flushed: Flushed) -> AsyncIterator[TurnEvent]:
        request, agent = self._request, self._agent
        context, new_context = await open_context(request, agent, self._store, self._context_parts)
        sampling = merged_sampling(agent.sampling, request.sampling)
        if sampling.max_tokens is None and (
            default_answer := self._windows.limits(agent.provider, agent.model).max_tokens
        ):  # the model catalog's answer size
            sampling = dataclasses.replace(sampling, max_tokens=default_answer)
        await context.check_input(request.tools, sampling.max_tokens)  # a refusal, not a failure
        if request.budget is not None:  # a spent budget is a refusal too, before the turn starts
            self._answer_cap(await context.counted((), request.tools), refuse=True)
        history = context.history_size
        run_id = random_hex()
        started = time.monotonic()
        if log.isEnabledFor(logging.DEBUG):  # one line per turn at info: the finished one
            log.debug(
                "turn %s started: agent=%s history=%d context=%s",
                run_id,
                agent.id,
                history,
                dict(request.channel_context),
            )
        yield TurnStarted(run_id, agent.model_ref)
        own_tools = await self._own_tools()
        own_names = frozenset(tool.name for tool in own_tools)
        steps: list[ChatMessage] = []  # the assistant's calls and the tools' results so far
        used = Usage()  # every step's answer together
        choice = request.tool_choice
        said_something = False
        out_of_budget = False  # the budget ran out between steps: the turn ends at "length"
        client_calls: tuple[ToolCall, ...] = ()
        for step_number in range(1, agent.max_steps + 1):
            if step_number == agent.max_steps and steps:
                # The last step: without the agent's tools, the model answers with what it has.
                log.warning("turn %s reached tools.maxSteps (%d)", run_id, agent.max_steps)
                own_tools, own_names = (), frozenset()
            tools = request.tools + own_tools if own_tools else request.tools
            for attempt in (1, 2):
                messages = await context.fit(
                    steps, tools, sampling.max_tokens, "budget" if attempt == 1 else "overflow"
                )
                step = Step(ToolCalls(messages, own_names))
                answer_room = context.answer_room(sampling.max_tokens)
                if request.budget is not None:
                    cap = self._answer_cap(await context.counted(steps, tools), refuse=not steps)
                    out_of_budget = cap is not None and cap < 1
                    if out_of_budget:
                        break
                    if cap is not None:
                        answer_room = cap if answer_room is None else min(answer_room, cap)
                step_sampling = sampling
                if answer_room != sampling.max_tokens:
                    step_sampling = dataclasses.replace(sampling, max_tokens=answer_room)
                provider_request = ProviderRequest(
                    agent.model,
                    messages,
                    step_sampling,
                    tools,
                    choice,
                    request.parallel_tool_calls,
                    agent.cache_retention,
                    self._cache_key,
                )
                if self._cache_trace is not None:  # it hashes the whole prompt: on a thread
                    await self._off_loop.run(
                        False, self._cache_trace.observe, request.session_key, provider_request
                    )
                shown = False
                try:
                    async for event in self._model.ask(
                        provider_request, step, separate=said_something
                    ):
                        shown = True
                        yield event
                    break
                except ContextOverflowError as overflow:
                    # Nothing of this step reached the caller: compact and ask once more.
                    if shown or attempt == 2 or not agent.compaction.enabled:
                        if attempt == 2:
                            self._metrics.overflow_recoveries_by(agent.id, "failed").inc()
                        raise
                    log.info("turn %s: %s; compacting and asking again", run_id, overflow)
                    await context.overflowed(overflow, messages, tools)
            if out_of_budget:
                log.info(
                    "turn %s: the caller's budget ran out after step %d", run_id, step_number - 1
                )
                client_calls = ()
                break
            if attempt == 2:
                self._metrics.overflow_recoveries_by(agent.id, "ok").inc()
            assert step.finished is not None  # ask() raised otherwise
            answered = step.finished
            self._record(answered.usage, context.estimate)
            if answered.usage.prompt_tokens:
                context.reported(answered.usage.prompt_tokens, self._model.answered_by)
                self._metrics.prompt_tokens_by(agent.provider).observe(answered.usage.prompt_tokens)
            calls = step.calls.whole()
            said_something = said_something or any(step.parts)
            used += answered.usage
            own_calls = [call for call in calls if call.name in own_names]
            client_calls = tuple(call for call in calls if call.name not in own_names)
            text = "".join(step.parts)
            # The thinking is kept with the answer (and stored): Anthropic wants it back,
            # signatures and all, when the answer continues after its tool calls ran.
            thinking = answered.reasoning
            if not own_calls:
                steps.append(
                    ChatMessage("assistant", text, tool_calls=client_calls, reasoning=thinking)
                )
                break
            steps.append(ChatMessage("assistant", text, tool_calls=calls, reasoning=thinking))
            assert self._tools is not None  # own_names is empty without them
            async for tool_event in self._tools.run_step(own_calls, steps):
                yield tool_event
            if client_calls:
                break
            choice = ToolChoice()  # the client's choice was for the first step
        if out_of_budget:
            reason = FinishReason.LENGTH
        else:
            reason = FinishReason.TOOL_CALLS if client_calls else answered.finish_reason
        finished = TurnFinished(reason, used, client_calls, spent=self._usage.spent())
        await flushed()  # the text is with the caller: it never waits for the session write
        turn = [*new_context, request.input, *steps]
        owner = identity_of(request.caller)
        # A turn that read its session is stored only if nobody else's was stored since.
        read_length = None if request.new_session else context.stored_length
        origin = TurnOrigin(
            agent.id,
            request.response_id,
            context.made,
            owner,
            read_length,
            tuple(self._usage.calls),
            run_id,
            one_off=request.new_session,
        )
        await store_turn(self._store, request.session_key, turn, origin)
        if log.isEnabledFor(logging.INFO):  # the session's fingerprint costs a hash
            log.info(
                "turn %s finished: agent=%s model=%s session=%s history=%d %s, %d tokens, %.0f ms",
                run_id,
                agent.id,
                self._model.answered_by,
                fingerprint(request.session_key),
                history,
                finished.finish_reason.value,
                finished.usage.completion_tokens,
                (time.monotonic() - started) * 1000,
            )
        yield finished

    def _answer_cap(self, prompt_tokens: int, refuse: bool) -> int | None:
        """The most tokens the next answer may have within the caller's budget (None: nothing
        caps it); with no room, `refuse` refuses the turn."""
        agent = self._agent
        cap = self._usage.answer_cap(
            self._request.budget, agent.provider, agent.model, prompt_tokens
        )
        if cap is not None and cap < 1 and refuse:
            raise OverBudgetError(
                f"You exceeded your current quota: the budget left for this turn cannot pay"
                f" for its prompt of about {prompt_tokens} tokens (gateway.limits)."
            )
        return cap

    def _record(self, usage: Usage, prompt_estimate: int) -> None:
        """One step's usage, for the model that answered it; a provider that reported no
        prompt tokens has the worker's estimate of them (and is marked estimated)."""
        if not usage.prompt_tokens and prompt_estimate:
            usage = dataclasses.replace(usage, prompt_tokens=prompt_estimate, estimated=True)
        provider, _, model = self._model.answered_by.partition("/")
        self._usage.add(provider, model, usage)

    async def _own_tools(self) -> tuple[Tool, ...]:
        if self._tools is None or not self._provider.supports_tools:
            return ()
        return await self._tools.offer(self._agent)

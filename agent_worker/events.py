"""What a running turn gives its caller, in order: `TurnStarted`, then pieces of the answer
(text, thinking, the client's tool calls) and the agent's own tool runs, then `TurnFinished`.
Providers give the same pieces and a `TurnFinished` for each model call."""

from __future__ import annotations

from dataclasses import dataclass

from agent_worker.domain import FinishReason, Reasoning, ToolCall, TurnSpend, Usage


@dataclass(frozen=True, slots=True)
class TurnStarted:
    run_id: str
    model: str


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    token_bytes: bytes = b""
    top_logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens of `text`, when asked for


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's thinking as it is written: shown apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the `index`th call: its id and name come first, then argument text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class TurnFinished:
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()  # whole, when the model called tools
    reasoning: tuple[Reasoning, ...] = ()  # the provider's thinking, whole
    spent: TurnSpend = TurnSpend()  # the whole turn's calls (set by the turn, not providers)


@dataclass(frozen=True, slots=True)
class ToolRunStarted:
    """The worker runs one of the agent's own tools (MCP) that the model called."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolRunFinished:
    call_id: str
    name: str
    summary: str  # the start of the result's text
    duration_ms: int
    is_error: bool


TurnEvent = (
    TurnStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallDelta
    | ToolRunStarted
    | ToolRunFinished
    | TurnFinished
)

"""The worker's own types for messages, turns and what sessions store (a turn's events are
in events.py); `proto_mapping` converts the contract's messages to and from these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, serialized


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A model's thinking before its answer (Anthropic's thinking block, or a reasoning item of
    OpenAI's Responses API): never answer text, but sent back unchanged, signature and all, when
    the same answer continues after its tool calls ran. Each API sends back only its own kind:
    a Responses reasoning item has an `item_id`, Anthropic's blocks have none."""

    text: str  # the thinking, or a Responses item's summary
    signature: str  # for a redacted block: its encrypted data; for a Responses item: ditto
    redacted: bool = False
    item_id: str = ""  # a Responses reasoning item's id (rs_…)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    text: str
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    tool_call_id: str = ""  # a tool message: the call it answers
    name: str = ""  # a tool message: the tool's name, when known
    reasoning: tuple[Reasoning, ...] = ()  # an assistant message's thinking


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call (the client runs it)."""

    name: str
    description: str = ""
    parameters_json: str = ""  # its arguments' JSON schema, serialized


ToolChoiceMode = Literal["auto", "none", "required", "function"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    function_name: str = ""  # with mode "function"

    def satisfied_by(self, calls: tuple[ToolCall, ...]) -> bool:
        if self.mode == "required":
            return bool(calls)
        if self.mode == "function":
            return any(call.name == self.function_name for call in calls)
        return True

    @property
    def forces_a_call(self) -> bool:
        return self.mode in ("required", "function")


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0  # all the prompt's tokens, cached ones included
    completion_tokens: int = 0
    cache_read_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it
    estimated: bool = False  # the provider reported none: counted or estimated by the worker

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.estimated or other.estimated,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: Literal["text", "json_object", "json_schema"] | None = None
    json_schema: str = ""
    logprobs: bool = False
    top_logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    agent_id: str
    session_key: str
    input: ChatMessage
    context: tuple[ChatMessage, ...] = ()
    extra_system_prompt: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    request_id: str = ""
    new_session: bool = False  # the key was made up for this turn: nothing is stored under it
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool | None = None
    model: str = ""  # "provider/model" instead of the agent's, for this turn
    response_id: str = ""  # the caller's id for this turn's answer, stored with the turn
    caller: Caller | None = None  # whom it runs for; None: the gateway's owner
    # OpenClaw's context headers the client sent (x-openclaw-message-channel, …), by name
    channel_context: tuple[tuple[str, str], ...] = ()
    traceparent: str = ""  # the caller's span (W3C), whose trace the turn's spans join
    budget: TurnBudget | None = None  # what the caller's budgets leave it; None: no budget


@dataclass(frozen=True, slots=True)
class TurnBudget:
    """What a turn's model calls may spend together (a gateway's limits): None is no cap."""

    tokens: int | None = None  # prompt + completion tokens
    usd: float | None = None  # by the agent's model's catalog prices


@dataclass(frozen=True, slots=True)
class TurnSpend:
    """What a turn's model calls spent together: every step, compaction summary, fallback."""

    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a call acts for. Sessions belong to the identity whose turn made them; the owner
    ("", a shared-secret caller) holds the ones made before identities were recorded."""

    identity: str
    admin: bool  # reaches every identity's sessions (operator.admin)

    def reaches(self, owner: str | None) -> bool:
        """Whether it may read or extend a session of `owner` (None: no such session)."""
        return self.admin or owner is None or owner == self.identity


def identity_of(caller: Caller | None) -> str:
    """Whom a call acts for ('' for the gateway's owner, who sends no caller)."""
    return caller.identity if caller is not None else ""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """Where a stored answer (a Responses API response id) belongs."""

    session_key: str
    agent_id: str
    owner: str = ""  # whose session it is


@dataclass(frozen=True, slots=True)
class Compaction:
    """A summary that stands, in later prompts, for the session's first `covers` messages
    (which stay stored)."""

    covers: int
    summary: str
    tokens_before: int = 0  # the prompt's tokens before it was made
    tokens_after: int = 0  # and after
    created_at: float = 0.0  # Unix seconds; set by the store


@dataclass(frozen=True, slots=True)
class StoredContext:
    """What a turn reads of its session: the latest compaction and the messages after it."""

    messages: list[ChatMessage]
    first_position: int = 0  # messages[0]'s position in the session (0 is its first message)
    compaction: Compaction | None = None

    @property
    def exists(self) -> bool:
        return bool(self.messages) or self.compaction is not None

    @property
    def last_position(self) -> int:
        """The session's length as read: where the next turn's messages start."""
        return self.first_position + len(self.messages)

    def cut_in_steps(self, limit: int | None) -> StoredContext:
        """`historyLimit`'s cut (the store read the last `limit` messages), moved to a multiple
        of half the limit: the prompt's first message then changes once every `limit / 2`
        messages instead of with each one, and a provider's prompt cache keeps the prefix in
        between. Keeps from half the limit to all of it."""
        if not limit or limit < 2 or len(self.messages) < limit:
            return self  # nothing was cut
        step = limit // 2
        start = -(-self.first_position // step) * step  # the next multiple of the step
        return dataclasses.replace(
            self, messages=self.messages[start - self.first_position :], first_position=start
        )


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_key: str
    agent_id: str  # "" for a session stored before agents were recorded
    title: str
    turns: int
    updated_at: float  # Unix seconds
    owner: str = ""  # whose session it is ("": the gateway's owner)

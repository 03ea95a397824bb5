"""The worker's own types for messages and turns; `wire` converts proto messages to these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    text: str
    images: tuple[Image, ...] = ()


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

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
class TurnFinished:
    finish_reason: FinishReason
    usage: Usage


TurnEvent = TurnStarted | TextDelta | TurnFinished

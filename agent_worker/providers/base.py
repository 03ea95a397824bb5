"""The one interface every provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from agent_worker.domain import ChatMessage, Sampling, TextDelta, TokenLogprob, TurnFinished


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """A full prompt: the system message first (when any), the turn's input last."""

    model: str
    messages: tuple[ChatMessage, ...]
    sampling: Sampling


ProviderEvent = TextDelta | TurnFinished


def token_logprob(entry: dict[str, Any]) -> TokenLogprob:
    """One `logprobs.content[]` entry of a chunk, in OpenAI's shape (llama-cpp-python's chat
    chunks use it too)."""
    return TokenLogprob(
        entry["token"],
        float(entry["logprob"]),
        bytes(entry.get("bytes") or ()),
        tuple(map(token_logprob, entry.get("top_logprobs") or ())),
    )


class Provider(Protocol):
    """Streams the reply to one prompt: text deltas, then exactly one TurnFinished.

    Cancelling the iteration (closing it, or cancelling the task that drives it) must abort the
    work behind it, such as an HTTP request or a generation thread. Failures raise the errors of
    `agent_worker.errors`.
    """

    supports_images: bool
    gives_logprobs: bool  # honours Sampling.logprobs / top_logprobs

    async def start(self) -> None:
        """Loads models or opens connections; called once before the worker serves."""

    async def close(self) -> None:
        """Releases what start() took."""

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]: ...

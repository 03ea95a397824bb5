"""What fits in a model's window: the window of each provider model, and a prompt's tokens.

A window comes from the provider's model catalog (`models.providers.<p>.models[].contextWindow`),
from `contextSize` for the embedded model, or, for a model with neither, from the first
overflow error that names it (kept for the worker's life). An agent's `contextTokens` caps it.

Tokens are counted with the model's own tokenizer where the provider has one (the embedded
model); otherwise estimated from characters and corrected, per model, by the prompt tokens the
provider reports afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent_worker.domain import ChatMessage, Tool
from services.provider_config import LlamaCppProviderConfig, ProviderConfig

# What a chat template adds around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 6
# Tool schemas are rendered into the prompt with instructions around them.
TOOLS_OVERHEAD_TOKENS = 200
PER_TOOL_OVERHEAD_TOKENS = 20
# An image's share of a prompt, before any provider says otherwise (OpenAI's high-detail tile
# budget for a 1024x1024 image is 765).
IMAGE_TOKENS = 800
# A first guess for text without a tokenizer: BPE tokenizers give 3.5 to 4.5 characters a token
# for English; guessing low keeps the first prompts inside the window.
CHARACTERS_PER_TOKEN = 3.0
_MIN_CORRECTION, _MAX_CORRECTION = 0.5, 4.0


Tokenizer = Callable[[str], int]  # a text's token count, by a provider's own tokenizer


def tokenizers_of(providers: Mapping[str, Any]) -> dict[str, Tokenizer]:
    """The providers that count tokens themselves (`count_tokens`), by name."""
    return {
        name: provider.count_tokens
        for name, provider in providers.items()
        if callable(getattr(provider, "count_tokens", None))
    }


@dataclass(frozen=True, slots=True)
class ModelLimits:
    window: int | None  # tokens; None while unknown
    max_tokens: int | None  # the answer's size when a request sets none
    images: bool | None = None  # the catalog's word (`input` holds "image"); None: no entry


class TokenCounter:
    """One provider model's counts: exact with a tokenizer, else estimated and corrected."""

    def __init__(self, tokenize: Tokenizer | None = None) -> None:
        self._tokenize = tokenize
        self.correction = 1.0  # reported / estimated, for estimates

    @property
    def tokenized(self) -> bool:
        """Whether it counts with a model's tokenizer (exact, and slower) rather than estimates."""
        return self._tokenize is not None

    def text(self, text: str) -> int:
        if self._tokenize is not None:
            return self._tokenize(text)
        return math.ceil(len(text) / CHARACTERS_PER_TOKEN * self.correction)

    def message(self, message: ChatMessage) -> int:
        tokens = self.text(message.text) + MESSAGE_OVERHEAD_TOKENS
        for call in message.tool_calls:
            tokens += self.text(call.name) + self.text(call.arguments) + MESSAGE_OVERHEAD_TOKENS
        return tokens + IMAGE_TOKENS * len(message.images)

    def messages(self, messages: Iterable[ChatMessage]) -> int:
        return sum(map(self.message, messages))

    def tools(self, tools: tuple[Tool, ...]) -> int:
        if not tools:
            return 0
        described = sum(
            self.text(tool.name + tool.description + tool.parameters_json)
            + PER_TOOL_OVERHEAD_TOKENS
            for tool in tools
        )
        return TOOLS_OVERHEAD_TOKENS + described

    def observe(self, estimated: int, reported: int) -> None:
        """The provider counted `reported` prompt tokens where the estimate said `estimated`."""
        if self._tokenize is not None or estimated <= 0 or reported <= 0:
            return
        ratio = self.correction * reported / estimated
        # Moves half way: one odd prompt (mostly code, or another language) does not swing it.
        corrected = (self.correction + ratio) / 2
        self.correction = min(max(corrected, _MIN_CORRECTION), _MAX_CORRECTION)

    def grow(self) -> None:
        """The provider refused a prompt the estimate said fits: estimate higher from now on."""
        if self._tokenize is None:
            self.correction = min(self.correction * 1.25, _MAX_CORRECTION)


class Counts(Protocol):
    """What compaction and clipping need of a counter."""

    def text(self, text: str) -> int: ...
    def message(self, message: ChatMessage) -> int: ...
    def messages(self, messages: Iterable[ChatMessage]) -> int: ...


class TurnCounts:
    """One turn's counts: each message counted once (messages are immutable), so that fitting
    a prompt several times (compaction, clipping, each step of a tool loop) stays linear."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self._by_id: dict[int, tuple[ChatMessage, int]] = {}  # the message keeps its id taken
        self._tools: tuple[tuple[Tool, ...], int] | None = None  # the tools last counted
        self._correction = counter.correction

    def text(self, text: str) -> int:
        return self.counter.text(text)

    def _current(self) -> None:
        if self.counter.correction != self._correction:  # estimates moved: count again
            self._by_id.clear()
            self._tools = None
            self._correction = self.counter.correction

    def message(self, message: ChatMessage) -> int:
        self._current()
        known = self._by_id.get(id(message))
        if known is not None and known[0] is message:
            return known[1]
        tokens = self.counter.message(message)
        self._by_id[id(message)] = (message, tokens)
        return tokens

    def messages(self, messages: Iterable[ChatMessage]) -> int:
        return sum(map(self.message, messages))

    def tools(self, tools: tuple[Tool, ...]) -> int:
        """The tools' count; a turn offers the same tools at every count of a step."""
        self._current()
        if self._tools is None or self._tools[0] != tools:
            self._tools = (tools, self.counter.tools(tools))
        return self._tools[1]


class ContextWindows:
    """Each provider model's limits and token counter, for one worker."""

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        tokenizers: Mapping[str, Tokenizer] | None = None,
    ) -> None:
        self.catalog = providers  # each provider's config, model catalog included
        self._tokenizers = dict(tokenizers or {})  # by provider name
        self._learned: dict[tuple[str, str], int] = {}
        self._limits: dict[tuple[str, str], ModelLimits] = {}
        self._counters: dict[tuple[str, str], TokenCounter] = {}

    def limits(self, provider: str, model: str) -> ModelLimits:
        key = (provider, model)
        known = self._limits.get(key)  # asked for on every turn: kept once worked out
        if known is None:
            known = self._limits[key] = self._work_out(provider, model)
        return known

    def _work_out(self, provider: str, model: str) -> ModelLimits:
        config = self.catalog.get(provider)
        entry = config.model_entry(model) if config is not None else None
        window = entry.context_window if entry else None
        max_tokens = entry.max_tokens if entry else None
        if isinstance(config, LlamaCppProviderConfig):  # the loaded context is the hard limit
            window = min(window or config.context_size, config.context_size)
            max_tokens = max_tokens or config.max_tokens
        learned = self._learned.get((provider, model))
        if learned is not None:
            window = min(window, learned) if window else learned
        return ModelLimits(window, max_tokens, entry.accepts_images if entry else None)

    def window(self, provider: str, model: str, cap: int | None = None) -> int | None:
        window = self.limits(provider, model).window
        if cap is not None:
            return min(window, cap) if window else cap
        return window

    def learn(self, provider: str, model: str, window: int) -> None:
        known = self._learned.get((provider, model))
        self._learned[(provider, model)] = min(window, known) if known else window
        self._limits.pop((provider, model), None)

    def counter(self, provider: str, model: str) -> TokenCounter:
        key = (provider, model)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = TokenCounter(self._tokenizers.get(provider))
        return counter

"""`anthropic-messages`: Anthropic's Messages API, spoken natively on the worker's own HTTP
client (`http_client`), as `openai-compatible` is. The body is built in anthropic_request.py,
the stream parsed in anthropic_stream.py; what maps to what is in docs/providers.md."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from agent_worker.providers.anthropic_request import messages_body, messages_url
from agent_worker.providers.anthropic_stream import MessagesStream
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.providers.http_provider import NO_PROFILES, HttpProvider
from services.provider_config import AnthropicProviderConfig, ModelEntry


class AnthropicMessagesProvider(HttpProvider):
    gives_logprobs = False  # the Messages API has none

    def __init__(
        self, config: AnthropicProviderConfig, profile_keys: Mapping[str, str] = NO_PROFILES
    ) -> None:
        url = messages_url(config.base_url) if config.base_url else None
        super().__init__(config, url, {"anthropic-version": config.anthropic_version}, profile_keys)
        self._max_tokens = config.max_tokens
        self._thinking_budget = config.thinking_budget_tokens
        self._entries: dict[str, ModelEntry] = {entry.id: entry for entry in config.models}

    @staticmethod
    def key_header(key: str) -> tuple[str, str]:
        return "x-api-key", key

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        entry = self._entries.get(request.model)
        return messages_body(request, entry, self._max_tokens, self._thinking_budget)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        return self.answer(
            request,
            lambda asked: orjson.dumps(self.body(asked)),
            MessagesStream(),
            "message_stop",
            "Anthropic's API",
        )

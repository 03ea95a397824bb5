"""`openai-responses`: OpenAI's Responses API (`POST {baseUrl}/responses`), spoken statelessly
on the worker's own HTTP client, as the other HTTP providers are. The body is built in
responses_request.py, the stream parsed in responses_stream.py; what maps to what is in
docs/providers.md."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.providers.http_provider import NO_PROFILES, HttpProvider
from agent_worker.providers.openai_compatible import OPENAI_HOST
from agent_worker.providers.responses_request import responses_body, responses_url
from agent_worker.providers.responses_stream import ResponsesStream
from services.provider_config import OpenAIResponsesProviderConfig


class OpenAIResponsesProvider(HttpProvider):
    gives_logprobs = False

    def __init__(
        self, config: OpenAIResponsesProviderConfig, profile_keys: Mapping[str, str] = NO_PROFILES
    ) -> None:
        url = responses_url(config.base_url) if config.base_url else None
        super().__init__(config, url, {}, profile_keys)
        self._official = url is not None and url.host == OPENAI_HOST

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        entry = self._config.model_entry(request.model)
        return responses_body(request, entry, self._official)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        return self.answer(
            request,
            lambda asked: orjson.dumps(self.body(asked)),
            ResponsesStream(),
            "response.completed",
            "a Responses API",
        )

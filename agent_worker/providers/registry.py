"""Builds providers from `models.providers`; adding a provider means one module and one entry."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent_worker.providers.anthropic_messages import AnthropicMessagesProvider
from agent_worker.providers.base import Provider
from agent_worker.providers.echo import EchoProvider
from agent_worker.providers.http_provider import NO_PROFILES
from agent_worker.providers.llama_cpp import LlamaCppProvider
from agent_worker.providers.openai_compatible import OpenAICompatibleProvider
from agent_worker.providers.openai_responses import OpenAIResponsesProvider
from services.provider_config import ProviderConfig

_FACTORIES: dict[str, Callable[..., Provider]] = {
    "echo": EchoProvider,
    "openai-compatible": OpenAICompatibleProvider,
    "openai-completions": OpenAICompatibleProvider,  # OpenClaw's name for it
    "openai-responses": OpenAIResponsesProvider,
    "anthropic-messages": AnthropicMessagesProvider,
    "llama-cpp": LlamaCppProvider,
}


def build_provider(
    config: ProviderConfig, profile_keys: Mapping[str, str] = NO_PROFILES
) -> Provider:
    """`profile_keys`: the keys of the provider's auth profiles (HTTP providers only)."""
    if profile_keys:
        return _FACTORIES[config.api](config, profile_keys)
    return _FACTORIES[config.api](config)

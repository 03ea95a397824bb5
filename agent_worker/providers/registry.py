"""Builds providers from `models.providers`; adding a provider means one module and one entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_worker.providers.anthropic_messages import AnthropicMessagesProvider
from agent_worker.providers.base import Provider
from agent_worker.providers.echo import EchoProvider
from agent_worker.providers.llama_cpp import LlamaCppProvider
from agent_worker.providers.openai_compatible import OpenAICompatibleProvider
from services.provider_config import ProviderConfig

_FACTORIES: dict[str, Callable[[Any], Provider]] = {
    "echo": EchoProvider,
    "openai-compatible": OpenAICompatibleProvider,
    "openai-completions": OpenAICompatibleProvider,  # OpenClaw's name for it
    "anthropic-messages": AnthropicMessagesProvider,
    "llama-cpp": LlamaCppProvider,
}


def build_provider(config: ProviderConfig) -> Provider:
    return _FACTORIES[config.api](config)

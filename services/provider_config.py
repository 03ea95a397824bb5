"""`models.providers`: which model APIs the worker can call, one section per `api`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from services.config_section import Section


def header_value(value: str | None) -> str | None:
    """A value sent as an HTTP header (an API key): refused when it holds a line break."""
    if value is not None and ("\r" in value or "\n" in value):
        raise ValueError("must not hold a line break (it is sent as an HTTP header)")
    return value


class ModelEntry(Section):
    """One entry of a provider's model catalog, in OpenClaw's shape. clawgate uses the window,
    the answer size, `input` (images only where it holds "image") and `reasoning` (extended
    thinking on Anthropic); the other keys OpenClaw knows are accepted without a warning."""

    id: str = Field(min_length=1)
    name: str | None = None
    context_window: int | None = Field(None, alias="contextWindow", ge=1)
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)
    input: list[str] = Field(default_factory=lambda: ["text"])
    reasoning: bool = False
    cost: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    compat: dict[str, Any] = Field(default_factory=dict)

    @property
    def accepts_images(self) -> bool:
        return "image" in self.input


class ProviderSection(Section):
    # The provider's model catalog: windows and answer sizes per model id.
    models: list[ModelEntry] = Field(default_factory=list)

    def model_entry(self, model_id: str) -> ModelEntry | None:
        return next((entry for entry in self.models if entry.id == model_id), None)


class EchoProviderConfig(ProviderSection):
    api: Literal["echo"]
    reply: str = "{input}"
    delay_ms: float = Field(0, alias="delayMs", ge=0)


class LlamaCppProviderConfig(ProviderSection):
    api: Literal["llama-cpp"]
    model_path: str | None = Field(None, alias="modelPath")
    context_size: int = Field(2048, alias="contextSize", ge=128)
    threads: int | None = Field(None, ge=1)
    # Defaults for what a request leaves unset. A 135M model at llama.cpp's own defaults
    # (temperature 0.2, no repeat penalty) answered "hi" with 256 tokens of one phrase; these
    # gave short answers that stop by themselves (12 of 12 seeds).
    max_tokens: int = Field(128, alias="maxTokens", ge=1)
    temperature: float = Field(0.3, ge=0, le=2)
    top_p: float = Field(0.9, alias="topP", ge=0, le=1)
    repeat_penalty: float = Field(1.2, alias="repeatPenalty", ge=0)
    # Return logprobs when asked: loads the model with logits_all, which keeps contextSize x
    # vocabulary floats (about 400 MB for SmolLM2 at 2,048 tokens), so it is off by default.
    logprobs: bool = False
    # Whether the model may call a tool again right after tool results (tool_choice "auto").
    # A 135M model calls the same tool again instead of reading its result (4 runs of 4 on the
    # README's weather example), so by default it answers in words there.
    tool_calls_after_results: bool = Field(False, alias="toolCallsAfterResults")


class HttpProviderSection(ProviderSection):
    """What every provider reached over HTTP has: where, the key, extra headers, timeouts."""

    base_url: str = Field(alias="baseUrl")
    api_key: str | None = Field(None, alias="apiKey")
    headers: dict[str, str] = Field(default_factory=dict)  # sent with every request
    timeout_seconds: float = Field(600.0, alias="timeoutSeconds", gt=0)
    connect_timeout_seconds: float = Field(5.0, alias="connectTimeoutSeconds", gt=0)
    # An http:// proxy for this provider; unset, HTTPS_PROXY / HTTP_PROXY / NO_PROXY apply.
    proxy: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, base_url: str) -> str:
        if not base_url:  # an unset ${VAR}: the provider's turns fail until it is set
            return base_url
        scheme, _, rest = base_url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError(f"must be an http:// or https:// URL, got {base_url!r}")
        return base_url

    @field_validator("proxy")
    @classmethod
    def _http_proxy(cls, proxy: str | None) -> str | None:
        if proxy and not proxy.lower().startswith("http://"):
            raise ValueError(f"must be an http:// proxy URL, got {proxy.split('@')[-1]!r}")
        return proxy

    _one_line = field_validator("api_key")(header_value)

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not name.strip() or any(c in name + value for c in "\r\n") or ":" in name:
                raise ValueError(f"header {name!r}: a name without ':' and no line breaks")
        return headers


class OpenAICompatibleProviderConfig(HttpProviderSection):
    # "openai-completions" is OpenClaw's name for the same API.
    api: Literal["openai-compatible", "openai-completions"]


class OpenAIResponsesProviderConfig(HttpProviderSection):
    """OpenAI's Responses API (`POST {baseUrl}/responses`), called statelessly."""

    api: Literal["openai-responses"]
    base_url: str = Field("https://api.openai.com/v1", alias="baseUrl")


class AnthropicProviderConfig(HttpProviderSection):
    """Anthropic's Messages API (`POST {baseUrl}/v1/messages`), spoken natively."""

    api: Literal["anthropic-messages"]
    base_url: str = Field("https://api.anthropic.com", alias="baseUrl")
    # The API version header; 2023-06-01 is the one every Messages API server accepts.
    anthropic_version: str = Field("2023-06-01", alias="anthropicVersion")
    # The answer limit when neither the request nor the model's catalog entry sets one
    # (Anthropic requires max_tokens on every request).
    max_tokens: int = Field(4096, alias="maxTokens", ge=1)
    # Extended thinking's budget for catalog models with `reasoning: true` (Anthropic's
    # minimum is 1024, and it must stay below the answer limit).
    thinking_budget_tokens: int = Field(2048, alias="thinkingBudgetTokens", ge=1024)


# `api` values OpenClaw configs use that clawgate does not speak yet: named at startup.
NOT_YET_SUPPORTED_APIS = ("google-generative-ai",)


ProviderConfig = Annotated[
    EchoProviderConfig
    | LlamaCppProviderConfig
    | OpenAICompatibleProviderConfig
    | OpenAIResponsesProviderConfig
    | AnthropicProviderConfig,
    Field(discriminator="api"),
]


def _embedded_default_provider() -> dict[str, ProviderConfig]:
    return {"local": LlamaCppProviderConfig(api="llama-cpp")}


class ModelsConfig(Section):
    providers: dict[str, ProviderConfig] = Field(default_factory=_embedded_default_provider)

    @field_validator("providers", mode="before")
    @classmethod
    def _known_apis(cls, providers: Any) -> Any:
        if isinstance(providers, dict):
            for name, provider in providers.items():
                api = provider.get("api") if isinstance(provider, dict) else None
                if api in NOT_YET_SUPPORTED_APIS:
                    raise ValueError(
                        f"provider {name!r}: api {api!r} is not supported yet; clawgate speaks"
                        " 'openai-completions' (also 'openai-compatible'), 'openai-responses',"
                        " 'anthropic-messages', 'llama-cpp' and 'echo'"
                    )
        return providers

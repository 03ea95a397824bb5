"""`hooks`: webhooks that start agent runs (OpenClaw's keys: docs/configuration.md#hooks).

The token is the hooks' own (startup refuses the gateway's token or password); mappings turn a
payload into agent runs or wakes with OpenClaw's templates (gateway_edge/hook_templates.py).
JS/TS `transform` modules run inside OpenClaw's runtime only: a mapping that names one is
refused when the config loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from services.config_section import Section

FOR_EACH_LIMIT = 200  # a fan-out's items; the rest are dropped with a warning


class HookMatch(Section):
    path: str | None = None  # the subpath after hooks.path ("github" for /hooks/github)
    source: str | None = None  # the payload's string `source` field, exactly

    @field_validator("path")
    @classmethod
    def _bare(cls, path: str | None) -> str | None:
        return path.strip("/") if path is not None else None


class HookMapping(Section):
    id: str | None = None  # default: mapping-<index>
    match: HookMatch = Field(default_factory=HookMatch)
    action: Literal["agent", "wake"] = "agent"
    wake_mode: Literal["now", "next-heartbeat"] = Field("now", alias="wakeMode")
    name: str | None = None
    agent_id: str | None = Field(None, alias="agentId")
    session_key: str | None = Field(None, alias="sessionKey")
    session_mode: Literal["isolated", "persistent"] = Field("isolated", alias="sessionMode")
    message_template: str = Field("", alias="messageTemplate")
    text_template: str = Field("", alias="textTemplate")
    for_each: str | None = Field(None, alias="forEach")
    model: str | None = None
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", gt=0)
    allow_unsafe_external_content: bool = Field(False, alias="allowUnsafeExternalContent")
    transform: Any = None

    @model_validator(mode="after")
    def _no_transform(self) -> HookMapping:
        if self.transform is not None:
            raise ValueError(
                "transform modules (JS/TS) run inside OpenClaw's runtime, which clawgate does"
                " not have: express the mapping with messageTemplate / textTemplate instead"
            )
        return self

    @field_validator("for_each")
    @classmethod
    def _top_level(cls, key: str | None) -> str | None:
        if key is not None and (not key or any(c in key for c in ".[]") or key == "__proto__"):
            raise ValueError("must name a top-level key of the payload")
        return key


class HookDelivery(Section):
    """Where each finished run is posted, signed (docs/http-api.md#hooks)."""

    url: str
    secret: str = Field(min_length=16)
    max_attempts: int = Field(5, alias="maxAttempts", ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url


class HooksConfig(Section):
    enabled: bool = False
    token: str | None = None
    path: str = "/hooks"
    allowed_agent_ids: list[str] | None = Field(None, alias="allowedAgentIds")
    default_session_key: str | None = Field(None, alias="defaultSessionKey")
    allow_request_session_key: bool = Field(False, alias="allowRequestSessionKey")
    allowed_session_key_prefixes: list[str] = Field(
        default_factory=list, alias="allowedSessionKeyPrefixes"
    )
    mappings: list[HookMapping] = Field(default_factory=list)
    presets: list[str] = Field(default_factory=list)
    delivery: HookDelivery | None = None

    @field_validator("path")
    @classmethod
    def _base_path(cls, path: str) -> str:
        path = "/" + path.strip().strip("/")
        if path == "/":
            raise ValueError("'/' is not allowed: give the hooks a path of their own (/hooks)")
        return path

    @model_validator(mode="after")
    def _token_when_enabled(self) -> HooksConfig:
        if self.enabled and not (self.token or "").strip():
            raise ValueError("enabled hooks need a token (hooks.token)")
        return self

    def agent_allowed(self, agent_id: str) -> bool:
        allowed = self.allowed_agent_ids
        return allowed is None or "*" in allowed or agent_id in allowed

    def session_key_allowed(self, key: str) -> bool:
        prefixes = [p.lower() for p in self.allowed_session_key_prefixes if p.strip()]
        return not prefixes or key.lower().startswith(tuple(prefixes))

    def mapping_id(self, index: int) -> str:
        return self.mappings[index].id or f"mapping-{index}"

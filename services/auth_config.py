"""`auth`: several credentials per provider (OpenClaw's `auth.profiles` / `auth.order`), with
the credential in the entry (`${ENV}` substitution, or `apiKeyFile`). A provider with profiles
uses them instead of its own `apiKey`; the worker rotates them (agent_worker/auth_rotation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from services.config_section import Section
from services.provider_config import header_value


class AuthProfile(Section):
    provider: str = Field(min_length=1)  # a key of models.providers
    mode: Literal["api_key", "token", "oauth"] = "api_key"
    api_key: str | None = Field(None, validation_alias=AliasChoices("apiKey", "key", "token"))
    # A file holding the key (a mounted secret): read once at start, surrounding space removed.
    api_key_file: str | None = Field(None, alias="apiKeyFile")

    @model_validator(mode="after")
    def _has_a_key(self) -> AuthProfile:
        if self.mode == "oauth":
            raise ValueError(
                "mode 'oauth' needs OpenClaw's login flow, which clawgate does not run: give"
                " the profile an API key (mode 'api_key') or a static token (mode 'token')"
            )
        if self.api_key is None and self.api_key_file is None:
            raise ValueError("needs apiKey (or apiKeyFile)")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("apiKey and apiKeyFile: give one")
        return self

    _one_line = field_validator("api_key")(header_value)

    def secret(self) -> str:
        """The key (read from its file when it has one); never logged."""
        if self.api_key_file is None:
            return self.api_key or ""
        path = Path(self.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"apiKeyFile {str(path)!r}: {error.strerror or error}") from None
        if "\n" in key or "\r" in key:
            raise ValueError(f"apiKeyFile {str(path)!r}: holds more than one line")
        return key


class AuthConfig(Section):
    profiles: dict[str, AuthProfile] = Field(default_factory=dict)
    # The order profiles are tried in, per provider; unset: the profiles of that provider in
    # the order they are written, rotated round-robin.
    order: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _order_names_profiles(self) -> AuthConfig:
        for provider, names in self.order.items():
            for name in names:
                profile = self.profiles.get(name)
                if profile is None:
                    raise ValueError(f"order.{provider}: {name!r} is not in auth.profiles")
                if profile.provider != provider:
                    raise ValueError(
                        f"order.{provider}: profile {name!r} is for provider {profile.provider!r}"
                    )
            if len(set(names)) != len(names):
                raise ValueError(f"order.{provider}: a profile is named twice")
        return self

    def profiles_of(self, provider: str) -> list[str]:
        """The ids of a provider's profiles, in their order (none: it uses its own apiKey)."""
        if provider in self.order:
            return list(self.order[provider])
        return [name for name, profile in self.profiles.items() if profile.provider == provider]

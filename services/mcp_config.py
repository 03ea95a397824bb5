"""`mcp.servers` (the agent's own tools, run by the worker) and `agents.*.tools` (which of them an
agent may use), with OpenClaw's keys. See docs/tools.md."""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, model_validator

from services.config_section import Section

# An MCP tool's name as the model sees it: `<server>__<tool>`.
TOOL_NAME_SEPARATOR = "__"


def matches_any(name: str, patterns: list[str]) -> bool:
    """Exact names or `*` globs (nothing else in a pattern is special)."""
    return any(fnmatch.fnmatchcase(name, pattern.replace("[", "[[]")) for pattern in patterns)


class ToolFilterConfig(Section):
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    def keeps(self, tool: str) -> bool:
        if self.include and not matches_any(tool, self.include):
            return False
        return not matches_any(tool, self.exclude)


class McpServerConfig(Section):
    # stdio: a local program
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    # remote
    url: str | None = None
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    headers: dict[str, str] = Field(default_factory=dict)

    enabled: bool = True
    connection_timeout_ms: int = Field(10_000, alias="connectionTimeoutMs", ge=1)
    request_timeout_ms: int = Field(60_000, alias="requestTimeoutMs", ge=1)
    tool_filter: ToolFilterConfig = Field(default_factory=ToolFilterConfig, alias="toolFilter")

    @model_validator(mode="after")
    def _one_kind(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a stdio server) or url (a remote one)")
        if self.url is not None and not self.url.lower().startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        return self

    @property
    def is_stdio(self) -> bool:
        return self.command is not None


class McpConfig(Section):
    servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    # A tool result longer than this (UTF-8 bytes of its text) reaches the model truncated.
    max_result_bytes: int = Field(100 * 1024, alias="maxResultBytes", ge=1)

    @model_validator(mode="after")
    def _names_fit_tool_names(self) -> McpConfig:
        for name in self.servers:
            if TOOL_NAME_SEPARATOR in name or not name or not name.replace("-", "_").isidentifier():
                raise ValueError(
                    f"mcp.servers: {name!r} must be letters, digits, '-' or '_' without '__'"
                    " (tools are named <server>__<tool>)"
                )
        return self


class AgentToolsConfig(Section):
    """Which MCP tools an agent may use, as `<server>__<tool>` names or `*` globs: none unless
    allowed; deny wins."""

    allow: list[str] | None = None
    deny: list[str] | None = None
    max_steps: int | None = Field(None, alias="maxSteps", ge=1)


DEFAULT_MAX_STEPS = 8

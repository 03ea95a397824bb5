"""`mcp.servers` and `agents.*.tools`: OpenClaw's keys, clear errors, allow/deny matching."""

from __future__ import annotations

import pytest

from agent_worker.agents import AgentRegistry
from services.config import ConfigError, parse_config


def test_openclaw_mcp_keys_load() -> None:
    config = parse_config(
        """{
          mcp: { servers: {
            docs: { command: "uvx", args: ["mcp-server-fetch"], env: { A: "1" }, cwd: "/tmp" },
            remote: {
              url: "https://example.com/mcp", transport: "sse", requestTimeoutMs: 20000,
              connectionTimeoutMs: 5000, headers: { Authorization: "Bearer x" },
              toolFilter: { include: ["search_*"], exclude: ["admin_*"] }, enabled: false,
            },
          }, maxResultBytes: 1000 },
        }"""
    )
    docs, remote = config.mcp.servers["docs"], config.mcp.servers["remote"]
    assert docs.is_stdio and docs.args == ["mcp-server-fetch"] and docs.cwd == "/tmp"
    assert not remote.is_stdio and remote.transport == "sse" and not remote.enabled
    assert remote.request_timeout_ms == 20000 and remote.connection_timeout_ms == 5000
    assert remote.tool_filter.keeps("search_web") and not remote.tool_filter.keeps("admin_x")
    assert not remote.tool_filter.keeps("other")  # include limits to its matches
    assert config.mcp.max_result_bytes == 1000


@pytest.mark.parametrize(
    ("servers", "named"),
    [
        ('{ a: { command: "x", url: "http://h/mcp" } }', "either command"),
        ("{ a: { args: [] } }", "either command"),
        ('{ a: { url: "ftp://h/mcp" } }', "http:// or https://"),
        ('{ "a__b": { command: "x" } }', "without '__'"),
        ('{ a: { url: "http://h/mcp", transport: "websocket" } }', "mcp.servers.a.transport"),
    ],
)
def test_bad_server_entries_name_the_problem(servers: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config(f"{{ mcp: {{ servers: {servers} }} }}")


def test_agents_are_offered_nothing_unless_allowed_and_deny_wins() -> None:
    config = parse_config(
        """{
          models: { providers: { echo: { api: "echo" } } },
          agents: {
            defaults: { model: "echo/e", tools: { allow: ["time__*"], maxSteps: 4 } },
            list: [
              { id: "main", default: true },
              { id: "none", tools: { allow: [] } },
              { id: "web", tools: { allow: ["web__*", "time__now"], deny: ["web__admin_*"] } },
              { id: "plain" , tools: { maxSteps: 2 } },
            ],
          },
        }"""
    )
    agents = AgentRegistry.from_config(config)
    main, none, web, plain = (agents.get(name) for name in ("main", "none", "web", "plain"))
    assert main.may_use("time__now") and not main.may_use("web__search")
    assert main.max_steps == 4
    assert not none.may_use("time__now")
    assert web.may_use("web__search") and web.may_use("time__now")
    assert not web.may_use("web__admin_reset") and not web.may_use("time__zones")
    assert plain.may_use("time__now") and plain.max_steps == 2  # allow from the defaults
    assert not AgentRegistry.from_config(parse_config("{}")).get("main").may_use("a__b")

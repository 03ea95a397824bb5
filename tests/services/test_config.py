from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent_worker.agents import AgentRegistry
from services.config import (
    ConfigError,
    expand_env,
    load_config,
    parse_config,
)
from services.provider_config import LlamaCppProviderConfig


def test_empty_config_gives_the_embedded_default() -> None:
    config = parse_config("{}")
    assert config.gateway.port == 18789 and config.gateway.bind == "127.0.0.1"
    assert config.gateway.http.endpoints.chat_completions.enabled is False
    assert config.gateway.http.endpoints.chat_completions.max_body_bytes == 20 * 1024 * 1024
    assert isinstance(config.models.providers["local"], LlamaCppProviderConfig)
    assert [agent.id for agent in config.agents.entries] == ["main"]
    assert config.default_agent_id == "main"


def test_json5_with_comments_and_openclaw_keys() -> None:
    config = parse_config(
        """// comment
        { gateway: { auth: { mode: 'password', password: 'pw', rateLimit: { maxAttempts: 3 } },
          http: { endpoints: { chatCompletions: { enabled: true, } } } },
          agents: { list: [ { id: 'beta', default: true }, { id: 'main' } ] }, }"""
    )
    assert config.gateway.auth.mode == "password"
    assert config.gateway.auth.rate_limit.max_attempts == 3
    assert config.default_agent_id == "beta"


def test_env_expansion_reads_the_environment() -> None:
    assert expand_env({"a": ["${X}-${Y}"], "b": 1}, {"X": "1", "Y": "2"}) == {"a": ["1-2"], "b": 1}
    assert expand_env("${MISSING}", {}) == ""


def test_unknown_keys_warn_but_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        parse_config("{ gateway: { mystery: 1, auth: { extra: 2 } }, channels: {} }", "cfg")
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "gateway.mystery" in warned and "gateway.auth.extra" in warned and "channels" in warned


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{ gateway: { port: 'x' } }", "gateway.port"),
        ("{ gateway: { auth: { mode: 'open' } } }", "gateway.auth.mode"),
        ("{ agents: { list: [ { id: 'Bad Id' } ] } }", "agents.list.0.id"),
        ("{ models: { providers: { x: { api: 'nope' } } } }", "models.providers.x"),
        ("{ agents: { list: [ { id: 'a', model: 'ghost/m' } ] } }", "agents.list.0.model"),
        ("{ agents: { list: [ { id: 'a' }, { id: 'a' } ] } }", "appears twice"),
        (
            "{ models: { providers: { up: { api: 'openai-compatible',"
            " baseUrl: 'localhost:80' } } } }",
            "models.providers.up.openai-compatible.baseUrl",
        ),
        (
            "{ models: { providers: { up: { api: 'openai-compatible', baseUrl: 'http://h',"
            " apiKey: 'k\\r\\nx-evil: 1' } } } }",
            "line break",
        ),
        (
            "{ models: { providers: { g: { api: 'google-generative-ai',"
            " baseUrl: 'http://h' } } } }",
            "api 'google-generative-ai' is not supported yet",
        ),
        (
            "{ models: { providers: { a: { api: 'anthropic-messages',"
            " headers: { 'x-a': 'v\\nx-b: 1' } } } } }",
            "no line breaks",
        ),
        (
            "{ agents: { list: [ { id: 'a', model: { primary: 'local/m',"
            " fallbacks: ['ghost/m'] } } ] } }",
            "agents.list.0.model: provider 'ghost'",
        ),
        ("{ agents: { defaults: { model: { fallbacks: [] } } } }", "primary"),
        ("{ hooks: { enabled: true } }", "enabled hooks need a token"),
        (
            "{ gateway: { auth: { token: 'same-token' } },"
            " hooks: { enabled: true, token: 'same-token' } }",
            "must not be the gateway's token",
        ),
        ("{ hooks: { mappings: [ { transform: { module: 'gh.ts' } } ] } }", "transform modules"),
        ("{ hooks: { path: '/' } }", "'/' is not allowed"),
        ("{ hooks: { mappings: [ { agentId: 'ghost' } ] } }", "'ghost' is not an agent"),
        ("{ hooks: { mappings: [ { forEach: 'a.b' } ] } }", "top-level key"),
        (
            "{ auth: { profiles: { 'x:a': { provider: 'x', apiKey: 'k' } } } }",
            "auth.profiles.x:a: provider 'x' is not in models.providers",
        ),
        (
            "{ auth: { profiles: { 'l:a': { provider: 'local', apiKey: 'k' } } } }",
            "provider 'local' (llama-cpp) takes no API key",
        ),
        (
            "{ auth: { profiles: { 'o:a': { provider: 'o', mode: 'oauth', apiKey: 'k' } } } }",
            "clawgate does not run",
        ),
        ("{ auth: { profiles: { 'o:a': { provider: 'o' } } } }", "needs apiKey"),
        (
            "{ auth: { profiles: { 'o:a': { provider: 'o', apiKey: 'k' } },"
            " order: { o: ['o:a', 'o:b'] } } }",
            "order.o: 'o:b' is not in auth.profiles",
        ),
        (
            "{ gateway: { limits: { identities: { a: { tokensPerDay: 0 } } } } }",
            "gateway.limits.identities.a.tokensPerDay",
        ),
        ("{ gateway: { limits: { default: { usdPerDay: -5 } } } }", "usdPerDay"),
        ("{ gateway: { limits: { store: 'localhost:6379' } } }", "gateway.limits.store"),
        (
            "{ agents: { defaults: { params: { cacheRetention: 'standard' } } } }",
            "agents.defaults.params.cacheRetention",
        ),
        ("{ gateway: { limits: { onStoreDown: 'maybe' } } }", "gateway.limits.onStoreDown"),
        ("[1]", "top level must be an object"),
        ("{ nope", "not valid JSON5"),
    ],
)
def test_invalid_config_names_the_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert named in str(caught.value)


def test_openclaw_api_names_and_fallbacks_load() -> None:
    config = parse_config(
        """{
          models: { providers: {
            lm: { api: 'openai-completions', baseUrl: 'http://h/v1', headers: { 'x-a': 'b' } },
            claude: { api: 'anthropic-messages', apiKey: 'k' },
          } },
          agents: { defaults: { model: { primary: 'claude/opus', fallbacks: ['lm/small'] } } },
        }"""
    )
    assert config.models.providers["lm"].api == "openai-completions"
    claude = config.models.providers["claude"]
    assert claude.base_url == "https://api.anthropic.com"  # type: ignore[union-attr]
    model = config.agents.defaults.model
    assert not isinstance(model, str) and model.fallbacks == ["lm/small"]


def test_auth_profiles_in_openclaws_shape_keep_their_order() -> None:
    config = parse_config(
        """{ models: { providers: { openai: { api: 'openai-responses' } } },
             agents: { defaults: { model: 'openai/gpt-5.2' } },
             auth: { profiles: {
                 'openai:team-a': { provider: 'openai', mode: 'api_key', apiKey: 'ka' },
                 'openai:team-b': { provider: 'openai', mode: 'token', token: 'kb' } },
               order: { openai: ['openai:team-b', 'openai:team-a'] } } }"""
    )
    assert config.auth.profiles_of("openai") == ["openai:team-b", "openai:team-a"]
    assert config.auth.profiles["openai:team-b"].secret() == "kb"
    assert config.auth.profiles_of("local") == []


def test_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clawgate up"):
        load_config(tmp_path / "absent.json5")


def test_cache_retention_merges_as_openclaw_does() -> None:
    config = parse_config(
        """{
          models: { providers: {
            claude: { api: 'anthropic-messages', apiKey: 'k' },
            lm: { api: 'openai-completions', baseUrl: 'http://h/v1' },
          } },
          agents: {
            defaults: {
              model: 'claude/opus',
              params: { cacheRetention: 'long' },
              models: { 'claude/haiku': { params: { cacheRetention: 'none' } } },
            },
            list: [
              { id: 'main', default: true },
              { id: 'quick', model: 'claude/haiku' },
              { id: 'mine', model: 'claude/haiku',
                models: { 'claude/haiku': { params: { cacheRetention: 'short' } } } },
              { id: 'alerts', params: { cacheRetention: 'none' },
                models: { 'claude/opus': { params: { cacheRetention: 'short' } } } },
            ],
          },
        }"""
    )
    agents = {agent.id: agent for agent in AgentRegistry.from_config(config)}
    assert agents["main"].cache_retention == "long"  # agents.defaults.params
    assert agents["quick"].cache_retention == "none"  # the defaults' entry for its model
    assert agents["mine"].cache_retention == "short"  # the agent's entry for its model
    assert agents["alerts"].cache_retention == "none"  # the agent's params win over all


def test_anthropic_caches_for_five_minutes_unless_told_and_others_are_not_asked() -> None:
    config = parse_config(
        """{
          models: { providers: {
            claude: { api: 'anthropic-messages', apiKey: 'k' },
            lm: { api: 'openai-completions', baseUrl: 'http://h/v1' },
          } },
          agents: { list: [
            { id: 'main', default: true, model: 'claude/opus' },
            { id: 'local', model: 'lm/small' },
          ] },
        }"""
    )
    agents = {agent.id: agent for agent in AgentRegistry.from_config(config)}
    assert agents["main"].cache_retention == "short"
    assert agents["local"].cache_retention is None

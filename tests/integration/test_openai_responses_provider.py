"""`api: "openai-responses"` over real processes (edge, worker, HTTP) against the Responses
stand-in (devkit/responses_standin.py), which refuses what OpenAI refuses and checks every body
against the `openai` SDK's request types; and several keys per provider (`auth.profiles`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import json5
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import ResponseCompletedEvent, ResponseFunctionCallArgumentsDeltaEvent

from devkit.processes import TOKEN, Stack, echo_config, free_port, start_stack
from devkit.responses_rules import encrypted_of
from devkit.responses_standin import API_KEY, ResponsesStandIn
from services.config import parse_config
from tests.support.schemas import assert_valid

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SYSTEM = "You are the Responses agent."
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "
# Keys of the auth-profile providers: each must never reach a log line.
KEYS = {
    "sk-pair-a": 200,
    "sk-pair-b": 200,
    "sk-limited-c": 429,
    "sk-spare-d": 200,
    "sk-revoked-e": 401,
    "sk-revoked-f": 401,
    API_KEY: 200,
}
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
# A provider as OpenClaw's docs write one for OpenAI's Responses API.
OPENCLAW_PROVIDER = """
{
  baseUrl: "BASE_URL",
  apiKey: "${OPENAI_API_KEY}",
  api: "openai-responses",
  models: [
    {
      id: "gpt-5.2",
      name: "GPT-5.2",
      reasoning: true,
      input: ["text", "image"],
      cost: { input: 1.75, output: 14, cacheRead: 0.175, cacheWrite: 0 },
      contextWindow: 400000,
      maxTokens: 128000,
    },
  ],
}
"""


@pytest.fixture(scope="module")
def standin() -> Iterator[ResponsesStandIn]:
    with ResponsesStandIn(dict(KEYS)) as server:
        yield server


@pytest.fixture(scope="module")
def stack(standin: ResponsesStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("responses")
    config = echo_config(tmp_path)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["worker"]["metricsListen"] = f"127.0.0.1:{free_port()}"
    provider = json5.loads(OPENCLAW_PROVIDER.replace("BASE_URL", standin.base_url))
    provider["models"] += [
        {"id": "reasoning-tools", "reasoning": True},
        {"id": "said-back", "compat": {"supportsPromptCacheKey": True}},
    ]
    config["models"]["providers"]["oai"] = provider
    for name in ("pair", "limited", "revoked"):
        config["models"]["providers"][name] = {
            "api": "openai-responses",
            "baseUrl": standin.base_url,
        }
    config["auth"] = {
        "profiles": {
            "pair:a": {"provider": "pair", "mode": "api_key", "apiKey": "${PAIR_KEY_A}"},
            "pair:b": {"provider": "pair", "mode": "api_key", "apiKey": "${PAIR_KEY_B}"},
            "limited:c": {"provider": "limited", "apiKey": "sk-limited-c"},
            "limited:d": {"provider": "limited", "apiKeyFile": str(tmp_path / "key-d")},
            "revoked:e": {"provider": "revoked", "apiKey": "sk-revoked-e"},
            "revoked:f": {"provider": "revoked", "apiKey": "sk-revoked-f"},
        },
        "order": {"limited": ["limited:c", "limited:d"]},
    }
    (tmp_path / "key-d").write_text("sk-spare-d\n")
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    config["agents"]["list"] += [
        {"id": "oai", "model": "oai/said-back", "systemPrompt": SYSTEM},
        {"id": "thinker", "model": "oai/reasoning-tools", "tools": {"allow": ["time__*"]}},
        {"id": "retried", "model": {"primary": "oai/ratelimited-1", "fallbacks": ["oai/words-2"]}},
        {"id": "windowed", "model": "oai/window-700"},
        {"id": "pair", "model": "pair/said-back"},
        {"id": "limited", "model": {"primary": "limited/said-back", "fallbacks": ["echo/echo-1"]}},
        {"id": "revoked", "model": {"primary": "revoked/said-back", "fallbacks": ["oai/words-3"]}},
    ]
    env = {"OPENAI_API_KEY": API_KEY, "PAIR_KEY_A": "sk-pair-a", "PAIR_KEY_B": "sk-pair-b"}
    running = start_stack(tmp_path, config, env)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def worker_metric(stack: Stack, name: str, **labels: str) -> float:
    """A sample of the worker's metrics (0 when absent)."""
    text = httpx.get(f"http://{stack.config['worker']['metricsListen']}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_openclaws_responses_provider_loads_unchanged(standin: ResponsesStandIn) -> None:
    provider = OPENCLAW_PROVIDER.replace("BASE_URL", standin.base_url)
    config = parse_config(
        f"{{ agents: {{ defaults: {{ model: {{ primary: 'openai/gpt-5.2' }} }} }},"
        f" models: {{ providers: {{ openai: {provider} }} }} }}"
    )
    openai_provider = config.models.providers["openai"]
    assert openai_provider.api == "openai-responses"
    assert openai_provider.models[0].reasoning is True


def test_text_with_instructions_and_cached_tokens(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    asked = []
    for question in ("hello there", "and again"):
        before = len(standin.requests)
        completion = client.chat.completions.create(
            model="openclaw:oai",
            messages=[{"role": "user", "content": question}],
            user="cache-session",
        )
        assert_valid("CreateChatCompletionResponse", completion.model_dump(exclude_unset=True))
        assert completion.choices[0].message.content == f"instructions={SYSTEM} user={question}"
        [body] = standin.requests[before:]
        asked.append(body)
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == standin.usages[-1]["input_tokens"]
    assert all(body["store"] is False and body["instructions"] == SYSTEM for body in asked)
    assert asked[1]["input"][:2] == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": f"instructions={SYSTEM} user=hello there"},
    ]  # the whole conversation each time: nothing is stored upstream
    cached = standin.usages[-1]["input_tokens_details"]["cached_tokens"]
    details = completion.usage.prompt_tokens_details if completion.usage else None
    assert details is not None and details.cached_tokens == cached > 0
    # The catalog says this upstream takes a cache key: the session's, on both requests.
    assert asked[0]["prompt_cache_key"] == asked[1]["prompt_cache_key"]


def test_client_tool_calls_stream_and_round_trip_over_chat(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    stream = client.chat.completions.create(
        model="openclaw:oai",
        messages=messages,
        tools=[WEATHER_TOOL],
        stream=True,
        extra_headers={"x-openclaw-model": "oai/tools"},
    )
    chunks = list(stream)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    pieces = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert len(pieces) >= 2  # the arguments arrive in pieces, as the stand-in streamed them
    arguments = "".join(piece[0].function.arguments or "" for piece in pieces if piece[0].function)
    assert arguments == '{"city": "Paris"}'
    call_id = pieces[0][0].id
    assert call_id and chunks[-1].choices[0].finish_reason == "tool_calls"
    messages += [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]
    completion = client.chat.completions.create(
        model="openclaw:oai",
        messages=messages,
        tools=[WEATHER_TOOL],
        extra_headers={"x-openclaw-model": "oai/tools"},
    )
    assert completion.choices[0].message.content == "tool said: sunny"
    sent = standin.requests[-1]["input"]
    assert {"type": "function_call_output", "call_id": call_id, "output": "sunny"} in sent


def test_client_tool_calls_round_trip_over_responses(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": WEATHER_TOOL["function"]["parameters"],
    }
    events = list(
        client.responses.create(
            model="openclaw:oai",
            input="weather in Paris?",
            tools=[tool],  # type: ignore[list-item]
            stream=True,
            extra_headers={"x-openclaw-model": "oai/tools"},
        )
    )
    pieces = [e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert len(pieces) >= 2 and "".join(pieces) == '{"city": "Paris"}'  # as they streamed
    first = next(e.response for e in events if isinstance(e, ResponseCompletedEvent))
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    second = client.responses.create(
        model="openclaw:oai",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
        tools=[tool],  # type: ignore[list-item]
        extra_headers={"x-openclaw-model": "oai/tools"},
    )
    assert second.output_text == "tool said: rainy"


def test_reasoning_stays_out_of_the_answer_and_goes_back_encrypted(
    stack: Stack, standin: ResponsesStandIn
) -> None:
    before = len(standin.requests)
    body = {
        "model": "openclaw:thinker",
        "messages": [{"role": "user", "content": "what time is it in UTC?"}],
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{stack.base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    deltas = [
        orjson.loads(line[6:])["choices"][0]["delta"] for line in lines if '"choices":[{' in line
    ]
    text = "".join(delta.get("content") or "" for delta in deltas)
    reasoning = "".join(delta.get("reasoning_content") or "" for delta in deltas)
    assert text.startswith("Let me check.") and "tool said:" in text
    assert "Think it through." in reasoning and "Think it through." not in text
    first, second = standin.requests[before:]
    assert first["include"] == ["reasoning.encrypted_content"] and "temperature" not in first
    [item] = [item for item in second["input"] if item.get("type") == "reasoning"]
    summary = "\n\n".join(part["text"] for part in item["summary"])
    assert item["encrypted_content"] == encrypted_of(item["id"], summary)
    # The reasoning item goes right before what it led to: the text and the call.
    kinds = [entry.get("type") or entry["role"] for entry in second["input"]]
    assert kinds[kinds.index("reasoning") + 1 :][:2] == ["assistant", "function_call"]
    assert not standin.refusals


def test_a_rate_limit_is_retried_then_the_fallback_answers(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:retried", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "w0 w1 "
    assert standin.models_asked()[before:] == ["ratelimited-1"] * 3 + ["words-2"]


def test_a_context_overflow_compacts_and_every_turn_answers(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    overflows = standin.overflows
    for number in range(1, 9):
        completion = client.chat.completions.create(
            model="openclaw:windowed",
            messages=[{"role": "user", "content": f"Turn {number}. " + SENTENCE * 8}],
            user="windowed-session",
        )
        assert (completion.choices[0].message.content or "").startswith(f"noted: Turn {number}.")
    assert standin.overflows > overflows and standin.summaries >= 1


def keys_sent(standin: ResponsesStandIn, before: int) -> list[str]:
    return [
        headers["authorization"].removeprefix("Bearer ") for headers in standin.headers[before:]
    ]


def test_profiles_rotate_by_session_and_each_session_stays_on_its_own(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    used: dict[str, str] = {}
    for session in ("s1", "s2", "s1", "s2", "s1"):
        before = len(standin.requests)
        client.chat.completions.create(
            model="openclaw:pair", messages=[{"role": "user", "content": "hi"}], user=session
        )
        [key] = keys_sent(standin, before)
        assert used.setdefault(session, key) == key, session  # pinned
    assert sorted(used.values()) == ["sk-pair-a", "sk-pair-b"]  # new sessions take turns


def test_a_rate_limited_key_moves_to_the_next_without_a_fallback(
    client: openai.OpenAI, stack: Stack, standin: ResponsesStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:limited", messages=[{"role": "user", "content": "hi"}], user="lim"
    )
    answer = completion.choices[0].message.content or ""
    assert answer.startswith("instructions=") and answer.endswith(" user=hi")  # not echo's
    assert keys_sent(standin, before) == ["sk-limited-c", "sk-spare-d"]
    cooldowns = "clawgate_worker_auth_profile_cooldowns_total"
    assert worker_metric(stack, cooldowns, profile="limited:c", reason="ratelimited") == 1
    assert (
        worker_metric(stack, "clawgate_worker_model_fallbacks_total", model="limited/said-back")
        == 0
    )
    before = len(standin.requests)
    client.chat.completions.create(
        model="openclaw:limited", messages=[{"role": "user", "content": "again"}], user="lim"
    )
    assert keys_sent(standin, before) == ["sk-spare-d"]  # the session stays on d


def test_two_refused_keys_fall_back_to_the_next_model(
    client: openai.OpenAI, stack: Stack, standin: ResponsesStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:revoked", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "w0 w1 w2 "
    assert keys_sent(standin, before) == ["sk-revoked-e", "sk-revoked-f", API_KEY]
    for profile in ("revoked:e", "revoked:f"):
        cooldowns = "clawgate_worker_auth_profile_cooldowns_total"
        assert worker_metric(stack, cooldowns, profile=profile, reason="auth") == 1


def test_no_key_reaches_a_log_line(stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="openclaw:revoked", messages=[{"role": "user", "content": "x"}]
    )
    logs = stack.worker.log() + stack.edge.log()
    assert "auth profile revoked:e" in logs  # the profile is named…
    for key in KEYS:
        assert key not in logs, key  # …never its key
        assert not re.search(re.escape(key[-8:]), logs), key

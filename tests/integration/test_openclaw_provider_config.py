"""A provider config as OpenClaw's docs write one (a custom `openai-completions` provider with a
`models` catalog, the agent's model as `{primary, fallbacks}`) loads and runs unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import json5
import openai
import pytest

from devkit.processes import TOKEN, echo_config, start_stack
from devkit.upstream import UpstreamStandIn
from services.config import parse_config

OPENCLAW_MODELS = """
{
  agents: {
    defaults: {
      model: { primary: "lmstudio/minimax-m2.1-gs32", fallbacks: ["lmstudio/status-503"] },
    },
  },
  models: {
    mode: "merge",
    providers: {
      lmstudio: {
        baseUrl: "BASE_URL",
        apiKey: "LMSTUDIO_KEY",
        api: "openai-completions",
        models: [
          {
            id: "minimax-m2.1-gs32",
            name: "MiniMax M2.1 GS32",
            reasoning: false,
            input: ["text"],
            cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
            contextWindow: 196608,
            maxTokens: 8192,
          },
        ],
      },
    },
  },
}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn() as server:
        yield server


def test_openclaws_shape_loads_and_answers(upstream: UpstreamStandIn, tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    openclaw = json5.loads(OPENCLAW_MODELS.replace("BASE_URL", upstream.base_url))
    config["models"] = openclaw["models"]
    config["agents"]["defaults"] = openclaw["agents"]["defaults"]
    config["agents"]["list"] = [{"id": "main", "default": True}]
    parsed = parse_config(json5.dumps(config))
    entry = parsed.models.providers["lmstudio"].model_entry("minimax-m2.1-gs32")
    assert entry is not None and entry.context_window == 196608 and entry.max_tokens == 8192
    stack = start_stack(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
        completion = client.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "one two three"
    finally:
        stack.stop()
    request = upstream.requests[-1]
    assert request["model"] == "minimax-m2.1-gs32"
    assert request["max_tokens"] == 8192  # the catalog's maxTokens is the default answer size

"""The `openai-compatible` provider against a server this project did not write:
llama-cpp-python's own `python -m llama_cpp.server`, serving the same SmolLM2 GGUF file
(started through `tests.support.llama_server`, which loads the model as the embedded provider
does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from devkit.processes import (
    TOKEN,
    Stack,
    echo_config,
    free_port,
    start_stack,
)
from tests.support.llama_server import llama_server
from tests.support.schemas import assert_valid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tmp_path_factory.mktemp("upstream"), "--n_ctx", "2048") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def upstream_stack(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path: Path = tmp_path_factory.mktemp("stack")
    config = echo_config(tmp_path)
    config["models"]["providers"] = {
        "upstream": {
            "api": "openai-compatible",
            "baseUrl": upstream,
            "apiKey": "${UNSET_TEST_KEY}",
        },
        "nowhere": {"api": "openai-compatible", "baseUrl": f"http://127.0.0.1:{free_port()}/v1"},
    }
    config["agents"] = {
        "defaults": {"model": "upstream/smollm2", "sampling": {"maxTokens": 24}},
        "list": [{"id": "main", "default": True}, {"id": "broken", "model": "nowhere/any"}],
    }
    stack = start_stack(tmp_path, config)
    yield stack
    stack.stop()


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0, timeout=120)


def test_non_stream_through_upstream(upstream_stack: Stack) -> None:
    raw = sdk(upstream_stack).chat.completions.with_raw_response.create(
        model="openclaw:main", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    body = raw.http_response.json()
    assert_valid("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0
    # llama_cpp.server reports no usage in streams; the worker then counts the streamed tokens.
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_stream_through_upstream(upstream_stack: Stack) -> None:
    chunks = list(
        sdk(upstream_stack).chat.completions.create(
            model="openclaw:main",
            messages=[{"role": "user", "content": "Count to five."}],
            stream=True,
            max_tokens=16,
        )
    )
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 1  # tokens arrived one by one, not as one block
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_unreachable_provider_is_a_502(upstream_stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(upstream_stack).chat.completions.create(
            model="openclaw:broken", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "api_error"  # type: ignore[index]
    assert "unreachable" in caught.value.body["message"]  # type: ignore[index]
    # Issue 17.6: the upstream's address is for the worker's log, not for API clients.
    assert "127.0.0.1" not in caught.value.body["message"]  # type: ignore[index]
    assert "cannot connect to 127.0.0.1" in upstream_stack.worker.log()

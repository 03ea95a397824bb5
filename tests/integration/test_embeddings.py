"""`POST /v1/embeddings` over real processes: the `openai` SDK against the default agent on the
embedded SmolLM2 (vectors from the packaged GGUF), the echo provider's deterministic vectors,
bad inputs, auth, and an OpenAI-compatible upstream (llama-cpp-python's own server, embedding
the same GGUF) named by `x-openclaw-model`."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from devkit.processes import TOKEN, Stack, echo_config, start_stack
from tests.support.llama_server import llama_server

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["the cat sat on the mat", "a cat sitting on a mat", "quarterly tax filing deadlines"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server with the packaged model loaded for embeddings."""
    log_dir = tmp_path_factory.mktemp("embed-upstream")
    with llama_server(log_dir, "--n_ctx", "512", "--embedding", "True") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stack(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("embeddings")
    config = echo_config(tmp_path)
    config["models"]["providers"]["local"] = {"api": "llama-cpp"}
    config["models"]["providers"]["upstream"] = {"api": "openai-completions", "baseUrl": upstream}
    config["agents"]["list"] = [
        {"id": "main", "default": True, "model": "local/smollm2-135m"},
        {"id": "beta"},  # echo
        {"id": "gamma", "model": "local/smollm2-135m", "embeddingModel": "echo/vectors"},
    ]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0, timeout=120)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_the_default_agent_embeds_three_texts(client: openai.OpenAI) -> None:
    answer = client.embeddings.create(model="openclaw", input=TEXTS)
    vectors = [row.embedding for row in answer.data]
    assert [row.index for row in answer.data] == [0, 1, 2] and answer.model == "openclaw"
    assert len({len(vector) for vector in vectors}) == 1 and len(vectors[0]) == 576
    assert all(math.isfinite(value) for vector in vectors for value in vector)
    assert all(abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-4 for vector in vectors)
    # Near-duplicates are closer than unrelated text.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.1
    assert answer.usage.prompt_tokens > 0


def test_base64_decodes_to_the_same_floats(stack: Stack) -> None:
    body: dict[str, Any] = {"model": "openclaw", "input": TEXTS[0]}
    floats = httpx.post(f"{stack.base_url}/v1/embeddings", json=body, headers=AUTH, timeout=120)
    encoded = httpx.post(
        f"{stack.base_url}/v1/embeddings",
        json={**body, "encoding_format": "base64"},
        headers=AUTH,
        timeout=120,
    )
    vector = floats.json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(vector)
    assert all(abs(a - b) < 1e-6 for a, b in zip(decoded, vector, strict=True))


def test_echo_vectors_are_deterministic_and_take_dimensions(client: openai.OpenAI) -> None:
    first = client.embeddings.create(model="openclaw:beta", input=["same", "other"], dimensions=8)
    again = client.embeddings.create(model="openclaw:beta", input="same", dimensions=8)
    assert len(first.data[0].embedding) == 8
    assert first.data[0].embedding == again.data[0].embedding != first.data[1].embedding


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "openclaw", "input": []}, "input"),
        ({"model": "openclaw", "input": ["ok", 5]}, "input"),
        ({"model": "openclaw", "input": [[1, 2, 3]]}, "input"),
        ({"model": "openclaw", "input": ["x"] * 2049}, "input"),
        ({"model": "openclaw", "input": [""]}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": "openclaw", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "openclaw", "input": "hi", "dimensions": 0}, "dimensions"),
        ({"model": "openclaw:nobody", "input": "hi"}, "model"),
    ],
)
def test_bad_inputs_are_400s_naming_the_param(
    stack: Stack, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{stack.base_url}/v1/embeddings", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_embedded_model_refuses_other_dimensions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="576 components"):
        client.embeddings.create(model="openclaw", input="hi", dimensions=64)


def test_without_a_token_it_is_401(stack: Stack) -> None:
    body = {"model": "openclaw", "input": "hi"}
    assert httpx.post(f"{stack.base_url}/v1/embeddings", json=body, timeout=30).status_code == 401


def test_an_upstream_model_named_by_x_openclaw_model(client: openai.OpenAI) -> None:
    answer = client.embeddings.create(
        model="openclaw:beta",
        input=TEXTS,
        extra_headers={"x-openclaw-model": "upstream/smollm2"},
    )
    vectors = [row.embedding for row in answer.data]
    # 576 components: SmolLM2's, from the upstream (the agent's own echo model gives 16).
    assert len(vectors) == 3 and {len(vector) for vector in vectors} == {576}
    assert all(math.isfinite(value) for vector in vectors for value in vector)
    again = client.embeddings.create(
        model="openclaw:beta", input=TEXTS[0], extra_headers={"x-openclaw-model": "upstream/x"}
    )
    assert again.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_an_agents_embedding_model_embeds_for_it(client: openai.OpenAI) -> None:
    """gamma chats on the embedded model and embeds with echo (16 components, not 576)."""
    answer = client.embeddings.create(model="openclaw:gamma", input="hi")
    assert len(answer.data[0].embedding) == 16

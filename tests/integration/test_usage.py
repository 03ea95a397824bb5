"""Usage and cost per caller (issue 45, its first parts), on a real edge and worker: every
answer's tokens stored with its turn and priced from the catalog, read back through
`GET /v1/usage` and counted in the worker's metrics; cached prompt tokens reach clients."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest

from devkit.processes import TOKEN, Stack, echo_config, free_port, start_stack
from tests.integration.test_operations import scrape, value

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PRICES = {"input": 3.0, "output": 15.0}  # USD per million tokens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("usage")
    config = echo_config(tmp_path)
    config["models"]["providers"]["echo"]["models"] = [{"id": "echo-1", "cost": PRICES}]
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["worker"]["metricsListen"] = f"127.0.0.1:{free_port()}"
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


def usage(stack: Stack, **params: str) -> httpx.Response:
    return httpx.get(f"{stack.base_url}/v1/usage", params=params, headers=AUTH, timeout=30)


def test_usage_sums_what_the_answers_reported_and_prices_it(stack: Stack) -> None:
    worker_metrics = f"http://{stack.config['worker']['metricsListen']}/metrics"
    before = scrape(worker_metrics)
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    reported: list[tuple[int, int]] = []
    for text in ("one", "two words", "and three words"):
        completion = client.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": text}], user="usage-test"
        )
        assert completion.usage is not None
        reported.append((completion.usage.prompt_tokens, completion.usage.completion_tokens))
    response = client.responses.create(model="openclaw", input="through responses")
    assert response.usage is not None
    reported.append((response.usage.input_tokens, response.usage.output_tokens))
    streamed = client.chat.completions.create(
        model="openclaw",
        messages=[{"role": "user", "content": "streamed"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(streamed)[-1]
    assert last.usage is not None
    reported.append((last.usage.prompt_tokens, last.usage.completion_tokens))

    answer = usage(stack, group_by="identity,model")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    today = datetime.datetime.now(datetime.UTC).date()
    assert body["object"] == "list" and body["to"] == today.isoformat()
    (row,) = body["data"]
    expected_in = sum(prompt for prompt, _ in reported)
    expected_out = sum(completion for _, completion in reported)
    assert row["identity"] == "operator" and row["model"] == "echo/echo-1"
    assert row["requests"] == len(reported)
    assert (row["input_tokens"], row["output_tokens"]) == (expected_in, expected_out)
    expected_cost = (expected_in * PRICES["input"] + expected_out * PRICES["output"]) / 1e6
    assert row["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert set(row) == {
        "identity",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
    }
    (by_day,) = usage(stack, group_by="day", to=today.isoformat()).json()["data"]
    assert by_day["day"] == today.isoformat() and by_day["requests"] == len(reported)
    earlier = (today - datetime.timedelta(days=3)).isoformat()
    assert usage(stack, **{"from": earlier, "to": earlier}).json()["data"] == []

    embedded = client.embeddings.create(model="openclaw", input=["three words here", "two"])
    (with_embedding,) = usage(stack, group_by="model").json()["data"]
    assert with_embedding["requests"] == len(reported) + 1  # an embedding request counts too
    assert with_embedding["input_tokens"] == expected_in + embedded.usage.prompt_tokens
    expected_in += embedded.usage.prompt_tokens
    expected_cost += embedded.usage.prompt_tokens * PRICES["input"] / 1e6

    after = scrape(worker_metrics)
    labels = {"agent": "main", "provider": "echo", "model": "echo-1"}

    def moved(name: str, **more: str) -> float:
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    assert moved("clawgate_worker_model_tokens_total", kind="input") == expected_in
    assert moved("clawgate_worker_model_tokens_total", kind="output") == expected_out
    assert moved("clawgate_worker_model_cost_usd_total") == pytest.approx(expected_cost)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "person"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-12-07", "to": "2026-12-01"}, "from"),
    ],
)
def test_a_bad_usage_query_is_a_400_naming_its_param(
    stack: Stack, params: dict[str, Any], param: str
) -> None:
    answer = usage(stack, **params)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_usage_needs_the_gateways_auth(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/v1/usage", timeout=10).status_code == 401


def test_a_manual_compaction_is_a_usage_record_of_its_own(stack: Stack) -> None:
    key = f"usage-compact-{uuid.uuid4().hex}"
    headers = {**AUTH, "x-openclaw-session-key": key}
    for text in ("the first thing", "the second thing", "the third thing"):
        body = {"messages": [{"role": "user", "content": text}]}
        answer = httpx.post(
            f"{stack.base_url}/v1/chat/completions", headers=headers, json=body, timeout=30
        )
        assert answer.status_code == 200
    (before,) = usage(stack).json()["data"]
    compacted = httpx.post(
        f"{stack.base_url}/v1/sessions/{quote(key, safe='')}/compact", headers=AUTH, timeout=60
    )
    assert compacted.status_code == 200 and compacted.json()["compacted"] is True
    (after,) = usage(stack).json()["data"]
    assert after["requests"] == before["requests"] + 1  # its summary call, as a request
    assert after["input_tokens"] > before["input_tokens"]

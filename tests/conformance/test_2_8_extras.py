"""Models, health, readiness and request ids."""

from __future__ import annotations

import httpx
import openai
import pytest

from devkit.processes import TOKEN, Stack
from tests.conformance.helpers import AUTH, CHAT, assert_error, user
from tests.support.schemas import assert_valid

AGENTS = ["beta", "flaky", "main", "slow", "sluggish", "vision"]


def test_list_models(echo_stack: Stack) -> None:
    response = httpx.get(f"{echo_stack.base_url}/v1/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert_valid("ListModelsResponse", body)
    ids = [card["id"] for card in body["data"]]
    assert ids == ["openclaw", "openclaw/default", *(f"openclaw/{agent}" for agent in AGENTS)]
    assert {card["owned_by"] for card in body["data"]} == {"openclaw"}


def test_retrieve_models_with_the_sdk(echo_stack: Stack) -> None:
    sdk = openai.OpenAI(base_url=f"{echo_stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    assert [model.id for model in sdk.models.list()][:3] == [
        "openclaw",
        "openclaw/default",
        "openclaw/beta",
    ]
    model = sdk.models.retrieve("openclaw/main")
    assert (model.id, model.object) == ("openclaw/main", "model")
    assert_valid("Model", model.model_dump())
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("openclaw/nobody")


def test_models_need_auth(echo_stack: Stack) -> None:
    assert_error(httpx.get(f"{echo_stack.base_url}/v1/models"), 401, "unauthorized")
    assert_error(httpx.get(f"{echo_stack.base_url}/v1/models/openclaw"), 401, "unauthorized")


def test_health_and_readiness_need_no_auth(echo_stack: Stack) -> None:
    assert httpx.get(f"{echo_stack.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{echo_stack.base_url}/readyz").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_request_id_is_echoed_or_made(echo_stack: Stack, stream: bool) -> None:
    body = {"messages": user("x"), "stream": stream}
    given = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers={**AUTH, "x-request-id": "req-42"}, json=body
    )
    assert given.headers["x-request-id"] == "req-42"
    made = httpx.post(f"{echo_stack.base_url}{CHAT}", headers=AUTH, json=body)
    assert len(made.headers["x-request-id"]) == 32
    odd = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers={**AUTH, "x-request-id": "a b{}"}, json=body
    )
    assert odd.headers["x-request-id"] != "a b{}"  # not echoed verbatim into logs and headers
    failed = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers={"x-request-id": "req-43"}, json=body
    )
    assert failed.status_code == 401 and failed.headers["x-request-id"] == "req-43"

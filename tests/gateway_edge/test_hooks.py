"""The hooks' parts that need no worker: the templates (no second expansion), the planner's
policy and replay identities, and a body that arrives too slowly (408), on the edge's ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from gateway_edge import hooks
from gateway_edge.app import create_app
from gateway_edge.hook_actions import HookPlanner, HookRefused, idempotency_key
from gateway_edge.hook_templates import HookRequest, render
from services.config import parse_config

CONFIG = parse_config(
    """{ gateway: { auth: { mode: 'token', token: 'api-token-0123456789' } },
         hooks: { enabled: true, token: 'hook-token-0123456789', allowedAgentIds: ['main'],
                  mappings: [ { id: 'gh', match: { path: 'github' },
                                messageTemplate: '{{payload.issue.title}}' },
                              { id: 'each', match: { path: 'each' }, forEach: 'items',
                                messageTemplate: 'item {{items[0]}}' } ] } }"""
)


def test_templates_read_paths_indexes_headers_and_query_once() -> None:
    request = HookRequest(
        {"issue": {"title": "{{query.secret}}", "labels": ["bug", "ui"]}, "n": 3, "none": None},
        "github",
        {"x-event": "issues"},
        {"secret": "s3cr3t"},
    )
    rendered = render(
        "{{payload.issue.title}}|{{issue.labels[1]}}|{{headers.X-Event}}|{{n}}|{{none}}"
        "|{{missing.deep[4]}}|{{path}}|{{issue.labels}}",
        request,
    )
    assert rendered == '{{query.secret}}|ui|issues|3|||github|["bug","ui"]'
    assert render("{{now}}", request).endswith("Z")


def planner() -> HookPlanner:
    return HookPlanner(CONFIG.hooks, "hook-token-0123456789", "main")


def test_replay_identity_follows_the_key_and_what_is_dispatched() -> None:
    request = HookRequest({"issue": {"title": "A"}}, "github")
    key = {"idempotency-key": "k1"}
    [one] = planner().mapped(request, key)[1]  # type: ignore[index]
    [same] = planner().mapped(request, key)[1]  # type: ignore[index]
    [unkeyed] = planner().mapped(request, {})[1]  # type: ignore[index]
    other = HookRequest({"issue": {"title": "B"}}, "github")
    [changed] = planner().mapped(other, key)[1]  # type: ignore[index]
    assert one.replay_key and one.replay_key == same.replay_key  # type: ignore[union-attr]
    assert unkeyed.replay_key == ""  # type: ignore[union-attr]
    assert changed.replay_key != one.replay_key  # type: ignore[union-attr]
    items = HookRequest({"items": ["x", "y"]}, "each")
    first, second = planner().mapped(items, {})[1]  # type: ignore[index, misc]
    assert first.replay_key and first.replay_key != second.replay_key  # type: ignore[union-attr]


def test_idempotency_keys_in_openclaws_order() -> None:
    payload = {"idempotencyKey": "from-payload"}
    assert idempotency_key({"idempotency-key": " a "}, payload) == "a"
    assert idempotency_key({"x-openclaw-idempotency-key": "b"}, payload) == "b"
    assert idempotency_key({}, payload) == "from-payload"
    assert idempotency_key({"idempotency-key": "x" * 257}, {}) is None


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"message": "m", "agentId": "other"}, "allowedAgentIds"),
        ({"message": "m", "sessionKey": "hook:1"}, "allowRequestSessionKey"),
        ({"message": "m", "sessionMode": "persistent"}, "persistent"),
        ({"message": ""}, "message is required"),
        ({"message": "m", "sessionMode": "sometimes"}, "sessionMode"),
    ],
)
def test_direct_runs_keep_the_policy(payload: dict[str, Any], error: str) -> None:
    with pytest.raises(HookRefused, match=error):
        planner().direct(HookRequest(payload, "agent"), {})


async def test_a_body_that_does_not_arrive_in_time_is_a_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hooks, "BODY_SECONDS", 0.2)
    app = create_app(CONFIG)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/hooks/agent",
        "query_string": b"",
        "headers": [
            (b"authorization", b"Bearer hook-token-0123456789"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 5000),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # a sender that never sends its body
        return {}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent[0]["status"] == 408

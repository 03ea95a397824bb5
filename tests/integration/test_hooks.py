"""Webhooks that start agent runs (issue 50), on a deployment: two edges and two workers on the
machine's PostgreSQL, plain HTTP as a webhook sender sends it, and a local receiver for the
signed run deliveries. One run per delivery key across edges, concurrent sends and restarts; a
worker killed mid-run leaves its run failed; OpenClaw's status table case by case."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from devkit.processes import TOKEN, wait_until
from devkit.upstream import ThreadedServer
from tests.integration.test_scale_out import Cluster
from tests.support.postgres import requires_postgres

pytestmark = requires_postgres
HOOK_TOKEN = "hook-token-" + "x" * 32
DELIVERY_SECRET = "delivery-secret-0123456789"
HOOK_AUTH = {"Authorization": f"Bearer {HOOK_TOKEN}"}
API_AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUN = uuid.uuid4().hex[:8]  # PostgreSQL keeps runs between test runs: keys of this run's own


class Receiver(ThreadedServer):
    """Takes signed run deliveries; answers 500 to the first `fail_first` of each run."""

    path_prefix = ""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts: dict[str, int] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {}  # run id → the bodies it took
        self.bad_signatures = 0
        super().__init__()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        timestamp = headers.get(b"x-clawgate-timestamp", b"").decode()
        expected = hmac.new(
            DELIVERY_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        status = 200
        if headers.get(b"x-clawgate-signature", b"").decode() != f"sha256={expected}":
            self.bad_signatures += 1
            status = 401
        else:
            run = orjson.loads(body)
            count = self.attempts[run["id"]] = self.attempts.get(run["id"], 0) + 1
            if count <= self.fail_first:
                status = 500
            else:
                self.runs.setdefault(run["id"], []).append(run)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as running:
        yield running


def configure(receiver_url: str) -> Any:
    def change(config: dict[str, Any]) -> None:
        config["hooks"] = {
            "enabled": True,
            "token": HOOK_TOKEN,
            "allowRequestSessionKey": True,
            "allowedSessionKeyPrefixes": ["hook:"],
            "allowedAgentIds": ["main", "sluggish", "paced"],
            "mappings": [
                {
                    "id": "github",
                    "match": {"path": "github"},
                    "agentId": "main",
                    "name": "GitHub {{headers.x-github-event}}",
                    "messageTemplate": "Issue opened: {{payload.issue.title}} by"
                    " {{payload.sender.login}}",
                },
                {
                    "id": "batch",
                    "match": {"path": "batch"},
                    "forEach": "items",
                    "messageTemplate": "Item {{items[0].id}}",
                },
                {
                    "id": "deploys",
                    "match": {"path": "deploys", "source": "ci"},
                    "action": "wake",
                    "wakeMode": "next-heartbeat",
                    "agentId": "paced",
                    "textTemplate": "Deploy {{payload.version}} finished",
                },
                {
                    "id": "slow",
                    "match": {"path": "slow"},
                    "agentId": "sluggish",
                    "messageTemplate": "{{text}}",
                },
            ],
            "delivery": {"url": receiver_url, "secret": DELIVERY_SECRET, "maxAttempts": 4},
        }
        providers = config["models"]["providers"]
        providers["slowly"] = {"api": "echo", "reply": "w " * 400, "delayMs": 50}
        config["agents"]["list"].append({"id": "sluggish", "model": "slowly/s"})

    return change


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[tuple[Cluster, list[str]]]:
    running = Cluster(
        tmp_path_factory.mktemp("hooks"),
        workers=2,
        configure=configure(f"http://127.0.0.1:{receiver.port}/runs"),
    )
    try:
        for address in running.addresses:
            running.start_worker(address)
        edges = [running.start_edge(running.addresses), running.start_edge(running.addresses)]
        yield running, edges
    finally:
        running.stop()


def hook(base_url: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/hooks/{path}",
        content=body if isinstance(body, bytes) else orjson.dumps(body),
        headers={**HOOK_AUTH, "content-type": "application/json", **headers},
        timeout=60,
    )


def run_of(base_url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/v1/runs/{run_id}", headers=API_AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def finished_run(base_url: str, run_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = run_of(base_url, run_id)
        if run["status"] in ("completed", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def github_issue(title: str) -> dict[str, Any]:
    return {"action": "opened", "issue": {"title": title}, "sender": {"login": "octocat"}}


def test_a_mapped_github_payload_starts_a_run_whose_answer_lands_in_its_session(
    cluster: tuple[Cluster, list[str]], receiver: Receiver
) -> None:
    _, (edge, _) = cluster
    answer = hook(edge, "github", github_issue("Crash on start"), **{"x-github-event": "issues"})
    assert answer.status_code == 200 and answer.json()["ok"] is True
    run = finished_run(edge, answer.json()["runId"])
    assert run["status"] == "completed" and run["hook"] == "github"
    assert run["name"] == "GitHub issues" and run["session_key"].startswith("hook:")
    session = httpx.get(
        f"{edge}/v1/sessions/{run['session_key']}", headers=API_AUTH, timeout=30
    ).json()
    [user, assistant] = session["messages"]
    assert "Issue opened: Crash on start by octocat" in user["content"]
    assert "<<<EXTERNAL_UNTRUSTED_CONTENT" in user["content"]  # webhook text is data
    assert "Crash on start" in assistant["content"]
    listed = httpx.get(
        f"{edge}/v1/runs", params={"session_key": run["session_key"]}, headers=API_AUTH
    ).json()
    assert [item["id"] for item in listed["data"]] == [run["id"]]
    # Delivered, signed, once, after the receiver failed twice.
    wait_until(lambda: run["id"] in receiver.runs, 30, "the run's delivery")
    time.sleep(1)
    [delivered] = receiver.runs[run["id"]]
    assert receiver.attempts[run["id"]] == 3 and receiver.bad_signatures == 0
    assert delivered["status"] == "completed" and "Crash on start" in delivered["answer"]


def test_wait_for_completion_answers_with_the_completion(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (edge, _) = cluster
    answer = hook(edge, "agent", {"message": "Summarise the deploy", "waitForCompletion": True})
    body = answer.json()
    assert answer.status_code == 200 and body["ok"] is True
    assert body["completion"] == {
        "status": "ok",
        "replyDisposition": "visible",
        "delivered": False,
        "deliveryAttempted": False,
    }
    assert run_of(edge, body["runId"])["status"] == "completed"


def test_one_delivery_sent_twenty_times_at_once_through_both_edges_starts_one_run(
    cluster: tuple[Cluster, list[str]],
) -> None:
    running, edges = cluster
    key = f"delivery-{RUN}-once"

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{edges[number % 2]}/hooks/github",
                        json=github_issue("Twenty times"),
                        headers={**HOOK_AUTH, "Idempotency-Key": key},
                    )
                    for number in range(20)
                )
            )

    answers = asyncio.run(send_all())
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    run_ids = {answer.json()["runId"] for answer in answers}
    assert len(run_ids) == 1
    [run_id] = run_ids
    finished_run(edges[0], run_id)
    started = sum(
        process.log().count(f"run {run_id} started") for process in running.workers.values()
    )
    assert started == 1


def test_the_same_key_after_restarting_every_process_returns_the_same_run(
    cluster: tuple[Cluster, list[str]],
) -> None:
    running, edges = cluster
    key = f"delivery-{RUN}-restart"
    first = hook(edges[0], "github", github_issue("Before restart"), **{"Idempotency-Key": key})
    run_id = first.json()["runId"]
    finished_run(edges[0], run_id)
    for process in [*running.edges, *running.workers.values()]:
        process.stop()
    running.edges.clear()
    for address in running.addresses:
        running.start_worker(address)
    edges[:] = [running.start_edge(running.addresses), running.start_edge(running.addresses)]
    again = hook(edges[1], "github", github_issue("Before restart"), **{"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["runId"] == run_id
    other = hook(edges[1], "github", github_issue("Another issue"), **{"Idempotency-Key": key})
    assert other.json()["runId"] != run_id  # the same key with other content is another run


def test_a_worker_killed_mid_run_leaves_the_run_failed(
    cluster: tuple[Cluster, list[str]],
) -> None:
    running, edges = cluster
    answer = hook(edges[0], "slow", {"text": "take your time"})
    run_id = answer.json()["runId"]
    wait_until(
        lambda: any(f"run {run_id} started" in p.log() for p in running.workers.values()),
        30,
        "the run starts",
    )
    [holder] = [a for a, p in running.workers.items() if f"run {run_id} started" in p.log()]
    running.workers[holder].stop(signal.SIGKILL)
    run = finished_run(edges[0], run_id, seconds=60)
    assert run["status"] == "failed" and "worker running it stopped" in run["error"]
    running.start_worker(holder)


def test_a_fan_out_starts_one_run_per_item_and_an_empty_one_none(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (edge, _) = cluster
    items = [{"id": f"{RUN}-{n}"} for n in range(3)]
    answer = hook(edge, "batch", {"items": items})
    body = answer.json()
    assert answer.status_code == 200 and body["dispatched"] == 3 and len(set(body["runIds"])) == 3
    assert body["runId"] == body["runIds"][0]
    assert hook(edge, "batch", {"items": items}).json()["runIds"] == body["runIds"]  # replayed
    assert hook(edge, "batch", {"items": []}).status_code == 204


def test_a_payload_with_template_text_is_not_expanded_again(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (edge, _) = cluster
    title = "{{headers.authorization}} {{payload.sender}}"
    answer = hook(edge, "github", github_issue(title))
    run = finished_run(edge, answer.json()["runId"])
    session = httpx.get(
        f"{edge}/v1/sessions/{run['session_key']}", headers=API_AUTH, timeout=30
    ).json()
    user = session["messages"][0]["content"]
    assert f"Issue opened: {title} by octocat" in user
    assert HOOK_TOKEN not in user


@pytest.mark.parametrize(
    ("request_of", "status", "error"),
    [
        (lambda e: httpx.get(f"{e}/hooks/agent", headers=HOOK_AUTH), 405, "use POST"),
        (
            lambda e: httpx.post(
                f"{e}/hooks/agent", json={"message": "m"}, headers={"Authorization": "Bearer nope"}
            ),
            401,
            "unauthorized",
        ),
        (
            lambda e: httpx.post(
                f"{e}/hooks/agent?token={HOOK_TOKEN}", json={"message": "m"}, headers=HOOK_AUTH
            ),
            400,
            "query",
        ),
        (lambda e: hook(e, "nowhere", {}), 404, "no hook mapping"),
        (lambda e: httpx.post(f"{e}/hooks", headers=HOOK_AUTH, json={}), 404, "no hook action"),
        (lambda e: hook(e, "agent", b"{not json"), 400, "not valid JSON"),
        (lambda e: hook(e, "agent", {"text": "no message"}), 400, "message is required"),
        (lambda e: hook(e, "agent", b"x" * (256 * 1024 + 1)), 413, "larger"),
        (lambda e: hook(e, "agent", {"message": "m", "agentId": "beta"}), 400, "allowedAgentIds"),
        (
            lambda e: hook(e, "agent", {"message": "m", "sessionKey": "elsewhere:1"}),
            400,
            "allowedSessionKeyPrefixes",
        ),
        (
            lambda e: httpx.post(
                f"{e}/hooks/agent", json={"message": "m"}, headers={"x-openclaw-token": HOOK_TOKEN}
            ),
            200,
            None,
        ),
    ],
)
def test_the_status_table(
    cluster: tuple[Cluster, list[str]], request_of: Any, status: int, error: str | None
) -> None:
    _, (edge, _) = cluster
    answer = request_of(edge)
    assert answer.status_code == status, answer.text
    if error is not None:
        assert answer.json()["ok"] is False and error in answer.json()["error"]
    if status == 405:
        assert answer.headers["allow"] == "POST"


def test_twenty_bad_tokens_throttle_that_client_and_the_good_one_still_works(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (_, edge) = cluster
    bad = {"Authorization": "Bearer wrong"}
    codes = [
        httpx.post(f"{edge}/hooks/agent", json={"message": "m"}, headers=bad).status_code
        for _ in range(21)
    ]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    throttled = httpx.post(f"{edge}/hooks/agent", json={"message": "m"}, headers=bad)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert hook(edge, "agent", {"message": "m"}).status_code == 200


def test_the_gateway_token_does_not_open_the_hooks(cluster: tuple[Cluster, list[str]]) -> None:
    _, (edge, _) = cluster
    answer = httpx.post(f"{edge}/hooks/agent", json={"message": "m"}, headers=API_AUTH)
    assert answer.status_code == 401


def test_a_wake_joins_the_main_sessions_next_turn_or_runs_one_now(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (edge, other_edge) = cluster
    main = "agent:paced:main"
    httpx.delete(f"{edge}/v1/sessions/{main}", headers=API_AUTH, timeout=30)
    event = {"text": f"Backup {RUN} done", "mode": "next-heartbeat", "agentId": "paced"}
    first = hook(edge, "wake", event)
    assert first.json() == {"ok": True, "mode": "next-heartbeat", "eventOutcome": "queued"}
    assert hook(other_edge, "wake", event).json()["eventOutcome"] == "coalesced"
    mapped = hook(edge, "deploys", {"source": "ci", "version": "1.2"})
    assert mapped.json().get("eventOutcome") == "queued", mapped.text
    assert hook(edge, "deploys", {"source": "cron", "version": "1.2"}).status_code == 404
    stored = httpx.get(f"{edge}/v1/sessions/{main}", headers=API_AUTH, timeout=30).json()
    assert [m["content"] for m in stored["messages"]] == [
        f"System event: Backup {RUN} done",
        "System event: Deploy 1.2 finished",
    ]
    reply = httpx.post(
        f"{edge}/v1/chat/completions",
        headers={**API_AUTH, "x-openclaw-session-key": main},
        json={"model": "openclaw:paced", "messages": [{"role": "user", "content": "news?"}]},
        timeout=60,
    ).json()
    assert reply["choices"][0]["message"]["content"] == "turns=2 for news?"  # it saw both
    now = hook(edge, "wake", {"text": "Page the on-call", "agentId": "paced"})
    assert now.json()["mode"] == "now" and now.json()["eventOutcome"] == "queued"
    run = finished_run(edge, now.json()["runId"])
    assert run["session_key"] == main and run["status"] == "completed"


def test_every_finished_run_was_delivered_once_and_signed(
    cluster: tuple[Cluster, list[str]], receiver: Receiver
) -> None:
    """Runs last in this module: each run the tests finished reached the receiver once."""
    _, (edge, _) = cluster
    answer = hook(edge, "agent", {"message": "one more", "waitForCompletion": True})
    run_id = answer.json()["runId"]
    wait_until(lambda: run_id in receiver.runs, 30, "the last run's delivery")
    time.sleep(1)
    assert receiver.runs and all(len(bodies) == 1 for bodies in receiver.runs.values())
    assert receiver.bad_signatures == 0

"""Operating clawgate (issue 7): metrics that move by the right amounts, a request id followed
through both processes' logs, readiness following the workers, `clawgate status`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.processes import (
    REPO_ROOT,
    TOKEN,
    Process,
    Stack,
    clawgate,
    echo_config,
    edge_answers,
    extra_edge,
    free_port,
    start_stack,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("operations")
    config = echo_config(tmp_path)
    config["worker"]["metricsListen"] = f"127.0.0.1:{free_port()}"
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    stack = start_stack(tmp_path, config)
    yield stack
    stack.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def chat(stack: Stack, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        headers={**AUTH, **(headers or {})},
        json=body,
        timeout=30,
    )


def test_metrics_move_by_the_right_amounts(stack: Stack) -> None:
    edge_url = f"{stack.base_url}/metrics"
    worker_url = f"http://{stack.config['worker']['metricsListen']}/metrics"
    edge_before, worker_before = scrape(edge_url), scrape(worker_url)

    tokens = 0
    for text in ("one", "two words", "three more words"):
        response = chat(stack, messages=[{"role": "user", "content": text}])
        tokens += response.json()["usage"]["completion_tokens"]
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/chat/completions",
        headers=AUTH,
        json={
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "s"}],
        },
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    tokens += json.loads(lines[-1][6:])["usage"]["completion_tokens"]
    assert httpx.post(f"{stack.base_url}/v1/chat/completions", json={}).status_code == 401
    assert (
        httpx.post(
            f"{stack.base_url}/v1/chat/completions", headers={"Authorization": "Bearer x"}, json={}
        ).status_code
        == 401
    )
    assert chat(stack, messages=[]).status_code == 400

    edge, worker = scrape(edge_url), scrape(worker_url)

    def moved(samples: dict, before: dict, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    route = {"route": "/v1/chat/completions", "method": "POST"}
    assert moved(edge, edge_before, "clawgate_edge_requests_total", **route, status="200") == 4
    assert moved(edge, edge_before, "clawgate_edge_requests_total", **route, status="401") == 2
    assert moved(edge, edge_before, "clawgate_edge_requests_total", **route, status="400") == 1
    assert (
        moved(
            edge,
            edge_before,
            "clawgate_edge_request_duration_seconds_count",
            route="/v1/chat/completions",
        )
        == 7
    )
    chat_route = {"route": "/v1/chat/completions"}
    assert (
        moved(edge, edge_before, "clawgate_edge_time_to_first_token_seconds_count", **chat_route)
        == 1  # the stream's: a whole answer has no time to first token apart from its duration
    )
    assert moved(edge, edge_before, "clawgate_edge_completion_tokens_total", **chat_route) == tokens
    assert moved(edge, edge_before, "clawgate_edge_worker_calls_total", outcome="ok") == 4
    assert moved(edge, edge_before, "clawgate_edge_auth_failures_total", reason="missing") == 1
    assert moved(edge, edge_before, "clawgate_edge_auth_failures_total", reason="invalid") == 1
    assert value(edge, "clawgate_edge_streams_open", **chat_route) == 0

    assert (
        moved(worker, worker_before, "clawgate_worker_turns_total", agent="main", outcome="ok") == 4
    )
    assert (
        moved(worker, worker_before, "clawgate_worker_turn_duration_seconds_count", agent="main")
        == 4
    )
    assert (
        moved(
            worker,
            worker_before,
            "clawgate_worker_provider_time_to_first_token_seconds_count",
            provider="echo",
        )
        == 4
    )
    assert (
        moved(
            worker,
            worker_before,
            "clawgate_worker_provider_duration_seconds_count",
            provider="echo",
        )
        == 4
    )
    assert value(worker, "clawgate_worker_turns_in_flight") == 0
    assert value(worker, "clawgate_worker_sessions_waiting") == 0


def test_cancelled_turns_are_counted_by_outcome(stack: Stack) -> None:
    worker_url = f"http://{stack.config['worker']['metricsListen']}/metrics"
    before = scrape(worker_url)
    body = {
        "model": "openclaw:slow",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c"}],
    }
    with httpx.stream(
        "POST", f"{stack.base_url}/v1/chat/completions", headers=AUTH, json=body
    ) as response:
        lines = response.iter_lines()
        while '"content":"slow ' not in next(lines):
            pass  # the client leaves after the first word

    def cancelled() -> float:
        samples = scrape(worker_url)
        return value(
            samples, "clawgate_worker_turns_total", agent="slow", outcome="cancelled"
        ) - value(before, "clawgate_worker_turns_total", agent="slow", outcome="cancelled")

    wait_until(lambda: cancelled() == 1, 5, "cancelled turn counted")
    assert value(
        scrape(worker_url), "clawgate_worker_turns_total", agent="slow", outcome="ok"
    ) == value(before, "clawgate_worker_turns_total", agent="slow", outcome="ok")


def test_one_request_id_through_both_logs(stack: Stack) -> None:
    request_id = "trace-4f2a9c"
    response = chat(
        stack,
        {"x-request-id": request_id, "x-openclaw-session-key": "secret-session-key-77"},
        messages=[{"role": "user", "content": "follow me"}],
    )
    assert response.headers["x-request-id"] == request_id

    def lines_of(process: Process) -> list[str]:
        return [line for line in process.log().splitlines() if f"[{request_id}]" in line]

    # Both lines are written once the answer has gone out, so they may come after it arrives.
    wait_until(
        lambda: (
            any("clawgate.edge.access" in line for line in lines_of(stack.edge))
            and any("finished" in line for line in lines_of(stack.worker))
        ),
        10,
        "the request's access line and its turn's finished line",
    )
    edge_lines, worker_lines = lines_of(stack.edge), lines_of(stack.worker)
    access = next(line for line in edge_lines if "clawgate.edge.access" in line)
    assert (
        "status=200" in access
        and "agent=main" in access
        and "ttft_ms=" not in access  # a whole answer: its duration says it all
        and "duration_ms=" in access
    )
    assert "session=" in access and "secret-session-key-77" not in stack.edge.log()
    finished = next(line for line in worker_lines if "finished" in line)  # one line per turn
    assert "agent=main" in finished and "session=" in finished and " ms" in finished
    assert not any("started" in line for line in worker_lines)  # that one is at debug
    assert "secret-session-key-77" not in stack.worker.log()


def test_metrics_can_move_to_another_port_or_be_turned_off(tmp_path: Path, stack: Stack) -> None:
    port = free_port()

    def apart(config: dict) -> None:
        config["gateway"]["metrics"] = {"listen": f"127.0.0.1:{port}"}

    with extra_edge(tmp_path, stack.config, apart) as base_url:
        assert httpx.get(f"{base_url}/metrics").status_code == 404
        assert "clawgate_edge_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text

    def off(config: dict) -> None:
        config["gateway"]["metrics"] = {"enabled": False}

    with extra_edge(tmp_path, stack.config, off) as base_url:
        assert httpx.get(f"{base_url}/metrics").status_code == 404


def test_readiness_follows_the_workers_and_status_shows_them(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, echo_config(tmp_path))
    try:
        status = subprocess.run(
            clawgate(stack.config_path, "status"), cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stderr
        assert (
            "ready" in status.stdout
            and stack.worker_address in status.stdout
            and "serving" in status.stdout
        )
        stack.worker.stop()
        wait_until(
            lambda: httpx.get(f"{stack.base_url}/readyz").status_code == 503, 10, "readyz 503"
        )
        down = subprocess.run(
            clawgate(stack.config_path, "status"), cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert down.returncode == 1 and "not serving" in down.stdout
        stack.restart_worker()
        assert edge_answers(stack.base_url)
    finally:
        stack.stop()


def series_by_route(samples: dict, route: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The series of `route`, with the route label taken out (to compare two routes)."""
    return {
        (name, tuple(label for label in labels if label[0] != "route"))
        for name, labels in samples
        if ("route", route) in labels
    }


def test_responses_has_every_edge_series_chat_completions_has(stack: Stack) -> None:
    """Both dialects run on the one turn driver: the same requests move the same series
    (route label, time to first token, open streams, completion tokens, statuses)."""
    moves: dict[str, dict[str, float]] = {}
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello there"}]}),
        ("/v1/responses", {"input": "hello there"}),
    ):
        before = scrape(f"{stack.base_url}/metrics")
        url = f"{stack.base_url}{path}"
        assert httpx.post(url, headers=AUTH, json=body, timeout=30).status_code == 200
        with httpx.stream("POST", url, headers=AUTH, json={**body, "stream": True}) as streamed:
            assert streamed.status_code == 200
            assert sum(1 for line in streamed.iter_lines() if line.startswith("data: ")) > 2
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, headers=AUTH, json={"model": 7}).status_code == 400
        assert httpx.get(url, headers=AUTH).status_code == 405
        after = scrape(f"{stack.base_url}/metrics")
        moves[path] = {
            f"{name}{dict(labels)}": value(after, name, **dict(labels))
            - value(before, name, **dict(labels))
            for name, labels in after
            if ("route", path) in labels
        }
    edge = scrape(f"{stack.base_url}/metrics")
    chat_series = series_by_route(edge, "/v1/chat/completions")
    responses_series = series_by_route(edge, "/v1/responses")
    assert chat_series, "no series for chat completions"
    assert chat_series <= responses_series, chat_series - responses_series
    for path in moves:
        moved = moves[path]
        assert moved[f"clawgate_edge_time_to_first_token_seconds_count{{'route': '{path}'}}"] == 1
        assert moved[f"clawgate_edge_completion_tokens_total{{'route': '{path}'}}"] > 0
        for status, count in (("200", 2), ("401", 1), ("400", 1), ("405", 1)):
            labels = {"method": "POST" if status != "405" else "GET", "route": path}
            labels["status"] = status
            key = f"clawgate_edge_requests_total{dict(sorted(labels.items()))}"
            assert moved[key] == count, (key, moved)
    assert value(edge, "clawgate_edge_streams_open", route="/v1/responses") == 0


def test_the_sessions_api_is_labelled_with_its_routes_not_other(stack: Stack) -> None:
    listed = httpx.get(f"{stack.base_url}/v1/sessions", headers=AUTH, timeout=30)
    assert listed.status_code == 200
    edge = scrape(f"{stack.base_url}/metrics")
    labels = {"method": "GET", "status": "200"}
    assert value(edge, "clawgate_edge_requests_total", route="/v1/sessions", **labels) >= 1

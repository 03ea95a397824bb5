"""Streams under failure (issue 5): disconnects, dead workers, timeouts, overload, shutdown,
same-session concurrency, crash consistency and slow readers, all with real processes and
real signals. Bounds here are generous ceilings, not performance targets."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from devkit.observe import child_pids, peak_rss_kib, rss_kib, running, timed_lines
from devkit.processes import (
    TOKEN,
    Process,
    Stack,
    clawgate,
    echo_config,
    free_port,
    free_ports,
    start_edge,
    start_stack,
    start_worker,
    wait_until,
    write_config,
)
from devkit.upstream import UpstreamStandIn
from gateway_edge.placement import rendezvous_weight
from tests.support.sessions import assert_one_turn_at_a_time, transcript

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"


def failure_config(tmp_path: Path, upstream: UpstreamStandIn) -> dict[str, Any]:
    config = echo_config(tmp_path, upstream.base_url)
    config["models"]["providers"]["paced"] = {
        "api": "echo",
        "reply": "turns={turns} for {input}",
        "delayMs": 100,
    }
    config["agents"]["list"] += [
        {"id": "drip", "model": "upstream/slow-200"},
        {"id": "timeboxed", "model": "upstream/slow-200", "turnTimeoutMs": 1000},
        {"id": "big", "model": "upstream/big-100000"},
        {"id": "paced", "model": "paced/p"},
    ]
    return config


@pytest.fixture
def stack(tmp_path: Path, upstream: UpstreamStandIn) -> Iterator[Stack]:
    stack = start_stack(tmp_path, failure_config(tmp_path, upstream))
    yield stack
    stack.stop()


def stream(
    base_url: str, model: str, text: str, key: str | None = None, timeout: float = 60
) -> Any:
    headers = {**AUTH, **({"x-openclaw-session-key": key} if key else {})}
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}
    return httpx.stream("POST", f"{base_url}{CHAT}", headers=headers, json=body, timeout=timeout)


def wait_for(predicate: Any, timeout: float) -> float:
    """Seconds until predicate() held; fails after `timeout`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


# 1. Client disconnect


@pytest.mark.parametrize("streaming", [True, False])
def test_1_client_disconnect_aborts_turn_and_provider(
    stack: Stack, upstream: UpstreamStandIn, streaming: bool
) -> None:
    key = f"disconnect:{uuid.uuid4().hex}"
    before = upstream.disconnects
    if streaming:
        with stream(stack.base_url, "openclaw:drip", "go", key) as response:
            lines = timed_lines(response)
            while '"content":"one ' not in next(lines)[1]:
                pass
        closed_at = time.monotonic()
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{stack.base_url}{CHAT}",
                headers={**AUTH, "x-openclaw-session-key": key},
                json={"model": "openclaw:drip", "messages": [{"role": "user", "content": "go"}]},
                timeout=1,
            )
        closed_at = time.monotonic()
    wait_for(lambda: upstream.disconnects > before, 5)
    aborted_after = upstream.disconnect_times[-1] - closed_at
    print(
        f"\n[issue5-1 {'stream' if streaming else 'non-stream'}] upstream request aborted"
        f" {aborted_after * 1000:.0f} ms after the client left"
    )
    assert aborted_after < 2
    started = time.monotonic()
    response = httpx.post(
        f"{stack.base_url}{CHAT}",
        headers={**AUTH, "x-openclaw-session-key": key},
        json={"model": "openclaw:main", "messages": [{"role": "user", "content": "next"}]},
        timeout=10,
    )
    assert (
        response.status_code == 200 and time.monotonic() - started < 2
    )  # the session is free at once
    assert transcript(stack.worker_address, key) == [
        (pb.ROLE_USER, "next"),
        (pb.ROLE_ASSISTANT, "echo: next [turns=0]"),
    ]


# 2. Worker killed mid-stream


def test_2_worker_killed_mid_stream(stack: Stack) -> None:
    with stream(stack.base_url, "openclaw:drip", "go") as response:
        lines = timed_lines(response)
        while '"content":"one ' not in next(lines)[1]:
            pass
        stack.worker.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        rest = list(lines)
    took = rest[-1][0] - killed_at
    print(f"\n[issue5-2 stream] error event and [DONE] {took * 1000:.0f} ms after SIGKILL")
    assert rest[-1][1] == "data: [DONE]"
    error = json.loads(rest[-2][1].removeprefix("data: "))["error"]
    assert error["type"] == "api_error" and took <= 5


def test_2_worker_killed_during_a_non_stream_call(stack: Stack) -> None:
    outcome: dict[str, httpx.Response] = {}

    def call() -> None:
        outcome["response"] = httpx.post(
            f"{stack.base_url}{CHAT}",
            headers=AUTH,
            timeout=30,
            json={"model": "openclaw:drip", "messages": [{"role": "user", "content": "go"}]},
        )

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.8)
    stack.worker.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    caller.join(10)
    took = time.monotonic() - killed_at
    response = outcome["response"]
    print(f"\n[issue5-2 non-stream] {response.status_code} {took * 1000:.0f} ms after SIGKILL")
    assert response.status_code in (502, 503) and response.json()["error"]["type"] == "api_error"
    assert took <= 5


# 3. No worker reachable, then recovery


def test_3_no_worker_then_recovery(stack: Stack) -> None:
    stack.worker.stop()
    started = time.monotonic()
    response = httpx.post(
        f"{stack.base_url}{CHAT}",
        headers=AUTH,
        json={"messages": [{"role": "user", "content": "x"}]},
    )
    took = time.monotonic() - started
    assert response.status_code == 503 and response.json()["error"]["type"] == "api_error"
    assert took < 3
    stack.worker = start_worker(stack.config_path, stack.worker_address, stack.worker.log_path)
    recovered = wait_for(
        lambda: (
            httpx.post(
                f"{stack.base_url}{CHAT}",
                headers=AUTH,
                json={"messages": [{"role": "user", "content": "x"}]},
            ).status_code
            == 200
        ),
        10,
    )
    print(
        f"\n[issue5-3] 503 in {took * 1000:.0f} ms;"
        f" recovered {recovered:.1f} s after the worker was back"
    )


# 4. Turn timeout


def test_4_turn_timeout(stack: Stack, upstream: UpstreamStandIn) -> None:
    before = upstream.disconnects
    started = time.monotonic()
    response = httpx.post(
        f"{stack.base_url}{CHAT}",
        headers=AUTH,
        timeout=30,
        json={"model": "openclaw:timeboxed", "messages": [{"role": "user", "content": "go"}]},
    )
    took = time.monotonic() - started
    error = response.json()["error"]
    assert (
        response.status_code == 504
        and error["type"] == "api_error"
        and "turnTimeoutMs" in error["message"]
    )
    assert 1 <= took < 4
    wait_for(lambda: upstream.disconnects > before, 3)  # the provider request was aborted
    with stream(stack.base_url, "openclaw:timeboxed", "go") as streamed:
        lines = [line for _, line in timed_lines(streamed)]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["error"]["code"] == "timeout"
    print(f"\n[issue5-4] 504 after {took:.2f} s (turnTimeoutMs 1000)")


# 5. Overload


def test_5_overload_tries_another_worker_then_429(
    tmp_path: Path, upstream: UpstreamStandIn
) -> None:
    config = failure_config(tmp_path, upstream)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    config["gateway"]["workers"] = addresses
    config["worker"]["maxConcurrentTurns"] = 1
    config["worker"]["maxQueuedTurns"] = 0  # a full worker refuses at once: no turn waits
    path = write_config(tmp_path, config)
    workers = [
        Process(clawgate(path, "worker", "--listen", address), tmp_path / f"w{index}.log").start()
        for index, address in enumerate(addresses)
    ]
    base_url = f"http://127.0.0.1:{config['gateway']['port']}"
    edge: Process | None = None
    try:
        for worker in workers:
            wait_until(lambda w=worker: "worker serving" in w.log(), 60, "worker", worker)  # type: ignore[misc]
        edge = start_edge(path, base_url, tmp_path / "edge.log")

        def first_choice(key: str) -> str:
            return max(addresses, key=lambda address: rendezvous_weight(address, key))

        same = [
            key for key in (f"k{index}" for index in range(50)) if first_choice(key) == addresses[0]
        ]
        # Each line iterator stays referenced: dropping one would close its connection.
        with stream(base_url, "openclaw:drip", "a", same[0]) as occupying:
            occupying_lines = timed_lines(occupying)
            next(occupying_lines)
            # A named session stays on its full worker (on SQLite another worker could run
            # it beside a turn of its own): 429, not a move.
            named = httpx.post(
                f"{base_url}{CHAT}",
                headers={**AUTH, "x-openclaw-session-key": same[1]},
                json={"messages": [{"role": "user", "content": "b"}]},
            )
            assert named.status_code == 429 and named.headers["retry-after"] == "1"
            with stream(base_url, "openclaw:drip", "b") as second:
                assert second.status_code == 200  # a fresh session goes where there is room
                second_lines = timed_lines(second)
                next(second_lines)
                third = httpx.post(
                    f"{base_url}{CHAT}",
                    headers=AUTH,
                    json={"messages": [{"role": "user", "content": "c"}]},
                )
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert third.json()["error"]["type"] == "rate_limited"
        wait_until(
            lambda: "RESOURCE_EXHAUSTED" in workers[0].log() and "turn" in workers[1].log(),
            5,
            "the refusal on one worker and the turn on the other, in their logs",
        )
    finally:
        if edge:
            edge.stop()
        for worker in workers:
            worker.stop()


# 6. Graceful shutdown


def test_6_worker_sigterm_lets_running_turns_finish(stack: Stack) -> None:
    with stream(stack.base_url, "openclaw:slow", "a b") as response:
        lines = timed_lines(response)
        next(lines)
        stack.worker.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        time.sleep(0.2)
        refused = httpx.post(
            f"{stack.base_url}{CHAT}",
            headers=AUTH,
            json={"messages": [{"role": "user", "content": "new"}]},
        )
        rest = [line for _, line in lines]
    assert refused.status_code == 503  # no new turns while draining
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in rest[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "slow a b"
    assert stack.worker.popen.wait(10) == 0  # type: ignore[union-attr]


def test_6_edge_sigterm_lets_open_streams_finish(stack: Stack) -> None:
    with stream(stack.base_url, "openclaw:slow", "a b") as response:
        lines = timed_lines(response)
        next(lines)
        stack.edge.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        rest = [line for _, line in lines]
    assert rest[-1] == "data: [DONE]" and '"finish_reason":"stop"' in rest[-2]
    # uvicorn re-raises the signal once it has drained, so the edge ends "killed by SIGTERM".
    assert stack.edge.popen.wait(10) in (0, -signal.SIGTERM)  # type: ignore[union-attr]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.base_url}/healthz")


def test_6_up_passes_sigterm_and_leaves_no_orphan(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["worker"]["listen"] = f"127.0.0.1:{free_ports(2)}"
    config["gateway"]["workers"] = [config["worker"]["listen"]]
    path = write_config(tmp_path, config)
    up = Process([*clawgate(path, "up", "--workers", "2")], tmp_path / "up.log").start()
    try:
        wait_until(lambda: "ready at" in up.log(), 60, "clawgate up", up)
        children = child_pids(up.pid)
        assert len(children) == 3
    finally:
        code = up.stop(signal.SIGTERM)
    assert code == 0
    wait_for(lambda: not any(running(pid) for pid in children), 10)


# 7. Same-session concurrency


def test_7_same_session_turns_run_one_after_another(stack: Stack) -> None:
    key = f"concurrent:{uuid.uuid4().hex}"
    replies: list[str] = []

    def call(index: int) -> None:
        response = httpx.post(
            f"{stack.base_url}{CHAT}",
            headers={**AUTH, "x-openclaw-session-key": key},
            timeout=60,
            json={
                "model": "openclaw:paced",
                "messages": [{"role": "user", "content": f"m{index}"}],
            },
        )
        replies.append(response.json()["choices"][0]["message"]["content"])

    callers = [threading.Thread(target=call, args=(index,)) for index in range(5)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    assert_one_turn_at_a_time(replies, transcript(stack.worker_address, key))


# 8. Crash consistency


def test_8_sigkill_mid_turn_leaves_only_complete_turns(stack: Stack) -> None:
    key = f"crash:{uuid.uuid4().hex}"
    done = httpx.post(
        f"{stack.base_url}{CHAT}",
        headers={**AUTH, "x-openclaw-session-key": key},
        json={"model": "openclaw:paced", "messages": [{"role": "user", "content": "first"}]},
        timeout=30,
    )
    assert done.status_code == 200
    with stream(stack.base_url, "openclaw:paced", "second", key) as response:
        lines = timed_lines(response)
        while '"content":"turns=2 ' not in next(lines)[1]:
            pass
        stack.worker.stop(signal.SIGKILL)
        list(lines)
    stack.restart_worker()
    assert transcript(stack.worker_address, key) == [
        (pb.ROLE_USER, "first"),
        (pb.ROLE_ASSISTANT, "turns=0 for first"),
    ]
    after = httpx.post(
        f"{stack.base_url}{CHAT}",
        headers={**AUTH, "x-openclaw-session-key": key},
        json={"model": "openclaw:paced", "messages": [{"role": "user", "content": "third"}]},
        timeout=30,
    )
    assert after.json()["choices"][0]["message"]["content"] == "turns=2 for third"


# 9. Slow readers


def test_9_slow_reader_does_not_make_anyone_buffer(stack: Stack, upstream: UpstreamStandIn) -> None:
    processes = {"edge": stack.edge.pid, "worker": stack.worker.pid}
    baseline = {name: rss_kib(pid) for name, pid in processes.items()}
    sent_before = upstream.chunks_sent
    # About 100 MB of text upstream, far more than all buffers on the way: loopback sockets
    # alone may grow to 32 MB each where `net.ipv4.tcp_rmem` allows it.
    total_chunks = 100_000
    with stream(stack.base_url, "openclaw:big", "go") as response:
        chunks = response.iter_raw(4096)
        received = 0
        while received < 64 * 1024:
            received += len(next(chunks))
        sent_over_time = []
        for _ in range(8):  # then 8 s of reading 4 KB every 200 ms
            for _ in range(5):
                time.sleep(0.2)
                received += len(next(chunks))
            sent_over_time.append(upstream.chunks_sent - sent_before)
        upstream_sent = upstream.chunks_sent - sent_before
        peak = {name: peak_rss_kib(pid) for name, pid in processes.items()}
        now = {name: rss_kib(pid) for name, pid in processes.items()}
    growth_mb = {name: (now[name] - baseline[name]) / 1024 for name in processes}
    print(
        f"\n[issue5-9] client read {received / 1024:.0f} KiB;"
        f" upstream sent {upstream_sent} of {total_chunks} chunks"
        f" (after each second: {sent_over_time});"
        f" RSS growth edge {growth_mb['edge']:.1f} MB, worker {growth_mb['worker']:.1f} MB;"
        f" peak RSS edge {peak['edge'] / 1024:.0f} MB, worker {peak['worker'] / 1024:.0f} MB"
    )
    # Backpressure reached the upstream: it stopped long before the end of its answer (what it
    # sent fills the buffers on the way: sockets, HTTP/2 windows, one batch of events).
    assert upstream_sent < total_chunks / 2
    # The buffers on the way (sockets, HTTP/2 windows) fill within seconds, then the upstream
    # only sends what the client reads.
    assert sent_over_time[-1] - sent_over_time[-3] < 500
    assert max(growth_mb.values()) < 32

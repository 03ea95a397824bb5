"""Three real workers sharing the machine's PostgreSQL server behind one edge (and two edges):
session affinity, spread of fresh sessions, failover without losing a turn, and no interleaving
of one session's turns across workers."""

from __future__ import annotations

import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.processes import (
    TOKEN,
    Process,
    clawgate,
    echo_config,
    free_port,
    start_edge,
    wait_until,
    worker_serving,
    write_config,
)
from services.logging import fingerprint
from tests.support.postgres import POSTGRES_URL, requires_postgres
from tests.support.sessions import assert_one_turn_at_a_time, transcript

pytestmark = requires_postgres
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Cluster:
    def __init__(
        self,
        tmp_path: Path,
        workers: int = 3,
        configure: Callable[[dict[str, Any]], None] = lambda config: None,
    ) -> None:
        self.config: dict[str, Any] = echo_config(tmp_path)
        self.config["sessions"] = {"store": POSTGRES_URL, "poolSize": 8}
        self.config["models"]["providers"]["paced"] = {
            "api": "echo",
            "reply": "turns={turns} for {input}",
            "delayMs": 60,
        }
        self.config["agents"]["list"].append({"id": "paced", "model": "paced/p"})
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
        self.config["gateway"]["workers"] = self.addresses
        configure(self.config)
        self.tmp_path = tmp_path
        self.path = write_config(tmp_path, self.config)
        self.workers: dict[str, Process] = {}
        self.edges: list[Process] = []

    def start_worker(self, address: str) -> None:
        index = self.addresses.index(address)
        process = Process(
            clawgate(self.path, "worker", "--listen", address), self.tmp_path / f"worker{index}.log"
        ).start()
        wait_until(lambda: worker_serving(address), 60, f"worker {address}", process)
        self.workers[address] = process

    def start_edge(self, addresses: list[str]) -> str:
        port = free_port()
        config = {
            **self.config,
            "gateway": {**self.config["gateway"], "port": port, "workers": addresses},
        }
        path = write_config(self.tmp_path, config, f"edge-{port}.json5")
        base_url = f"http://127.0.0.1:{port}"
        self.edges.append(start_edge(path, base_url, self.tmp_path / f"edge-{port}.log"))
        return base_url

    def turns_logged(self, address: str, session_key: str | None = None) -> int:
        log = self.workers[address].log()
        if session_key is None:
            return len(re.findall(r"turn \w+ finished", log))
        return log.count(f"session={fingerprint(session_key)}")

    def stop(self) -> None:
        for process in [*self.edges, *self.workers.values()]:
            process.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        for address in cluster.addresses:
            cluster.start_worker(address)
        yield cluster
    finally:
        cluster.stop()


def ask(base_url: str, text: str, **fields: Any) -> str:
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        headers=AUTH,
        timeout=60,
        json={"messages": [{"role": "user", "content": text}], **fields},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_a_session_sticks_and_fresh_sessions_spread(cluster: Cluster) -> None:
    base_url = cluster.start_edge(cluster.addresses)
    user = f"sticky-{uuid.uuid4().hex[:8]}"
    for index in range(6):
        assert ask(base_url, f"q{index}", user=user) == f"echo: q{index} [turns={2 * index}]"
    key = f"agent:main:openai-user:{user}"

    def per_worker() -> list[int]:  # log lines reach the file within a fraction of a second
        return sorted(cluster.turns_logged(address, key) for address in cluster.addresses)

    wait_until(lambda: per_worker() == [0, 0, 6], 5, f"six turns on one worker: {per_worker()}")

    before = {address: cluster.turns_logged(address) for address in cluster.addresses}
    callers = [
        threading.Thread(target=ask, args=(base_url, "fresh"), kwargs={"model": "openclaw:slow"})
        for _ in range(6)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)

    def spread() -> list[int]:
        return sorted(cluster.turns_logged(a) - before[a] for a in cluster.addresses)

    # Least in flight: two on each worker.
    wait_until(lambda: spread() == [2, 2, 2], 5, f"two turns on each worker: {spread()}")


def test_killing_the_serving_worker_loses_no_turn(cluster: Cluster) -> None:
    base_url = cluster.start_edge(cluster.addresses)
    user = f"failover-{uuid.uuid4().hex[:8]}"
    key = f"agent:main:openai-user:{user}"
    for index in range(3):
        ask(base_url, f"q{index}", user=user)
    wait_until(
        lambda: any(cluster.turns_logged(address, key) for address in cluster.addresses),
        5,
        "the serving worker's turn lines",
    )
    serving = next(address for address in cluster.addresses if cluster.turns_logged(address, key))
    cluster.workers[serving].stop(signal.SIGKILL)
    assert ask(base_url, "after the crash", user=user) == "echo: after the crash [turns=6]"

    def takers() -> list[str]:
        return [a for a in cluster.addresses if a != serving and cluster.turns_logged(a, key)]

    # Another worker, with the full history from PostgreSQL.
    wait_until(lambda: len(takers()) == 1, 5, "one other worker took the session")


def test_one_session_through_two_edges_never_interleaves(cluster: Cluster) -> None:
    edges = [cluster.start_edge([cluster.addresses[0]]), cluster.start_edge([cluster.addresses[1]])]
    key = f"two-edges:{uuid.uuid4().hex}"
    replies: list[str] = []

    def call(index: int) -> None:
        response = httpx.post(
            f"{edges[index % 2]}/v1/chat/completions",
            timeout=60,
            headers={**AUTH, "x-openclaw-session-key": key},
            json={
                "model": "openclaw:paced",
                "messages": [{"role": "user", "content": f"m{index}"}],
            },
        )
        assert response.status_code == 200, response.text
        replies.append(response.json()["choices"][0]["message"]["content"])

    callers = [threading.Thread(target=call, args=(index,)) for index in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    assert cluster.turns_logged(cluster.addresses[0], key) and cluster.turns_logged(
        cluster.addresses[1], key
    )
    assert_one_turn_at_a_time(replies, transcript(cluster.addresses[2], key))

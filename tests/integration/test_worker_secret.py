"""An edge whose worker secret is wrong gets a clear error for every turn, not a hang; an edge
with the right secret is served by the same worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.processes import (
    TOKEN,
    Stack,
    echo_config,
    extra_edge,
    start_stack,
    wait_until,
)

BODY = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    config = echo_config(tmp_path)
    config["worker"]["sharedSecret"] = "worker-secret-right"
    stack = start_stack(tmp_path, config)
    try:
        yield stack
    finally:
        stack.stop()


def post(base_url: str, stream: bool) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={**BODY, "stream": stream},
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )


def test_a_wrong_worker_secret_is_a_clear_error(tmp_path: Path, stack: Stack) -> None:
    assert post(stack.base_url, stream=False).status_code == 200

    def wrong_secret(config: dict[str, Any]) -> None:
        config["worker"]["sharedSecret"] = "worker-secret-wrong"

    # That edge never gets ready (it cannot list the worker's agents), but it says why.
    with extra_edge(tmp_path, stack.config, wrong_secret, ready_path="/healthz") as base_url:
        log = tmp_path / f"edge-{base_url.rpartition(':')[2]}.log"
        wait_until(lambda: "did not list its agents: UNAUTHENTICATED" in log.read_text(), 10, "")
        assert httpx.get(f"{base_url}/readyz").status_code == 503
        for stream in (False, True):
            started = time.monotonic()
            response = post(base_url, stream)
            assert time.monotonic() - started < 5
            assert response.status_code == 502, response.text
            assert "worker secret" in response.json()["error"]["message"]
    assert post(stack.base_url, stream=True).status_code == 200

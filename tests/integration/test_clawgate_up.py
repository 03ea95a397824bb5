"""`clawgate up` with a fresh HOME: starter config, the real SmolLM2 model, the source page's
two curl examples, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.processes import start_up_with_fresh_home
from tests.support.schemas import assert_valid

pytestmark = pytest.mark.slow
BASE_URL = "http://127.0.0.1:18789"


def children_of(pid: int) -> list[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def curl(token: str, *extra: str, stream: bool = False) -> str:
    body: dict[str, Any] = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    result = subprocess.run(
        [
            "curl",
            "-sS",
            *(["-N"] if stream else []),
            f"{BASE_URL}/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-H",
            "x-openclaw-agent-id: main",
            "-d",
            json.dumps(body),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_up_answers_both_curl_examples_with_the_local_model(tmp_path: Path) -> None:
    up, home = start_up_with_fresh_home(tmp_path)
    try:
        output = up.log()
        config_file = home / ".clawgate" / "clawgate.json5"
        assert f"wrote a starter config to {config_file}" in output
        assert f"ready at {BASE_URL}/v1" in output
        token = re.search(r"token: (\S+)", output).group(1)  # type: ignore[union-attr]
        assert token in config_file.read_text()
        # The page's link carries the token it just made (in the fragment, never sent).
        assert f"chat page: {BASE_URL}/#token={token}" in output
        assert config_file.stat().st_mode & 0o077 == 0

        completion = json.loads(curl(token))
        assert_valid("CreateChatCompletionResponse", completion)
        content = completion["choices"][0]["message"]["content"]
        assert content.strip() and "echo" not in content
        assert completion["usage"]["completion_tokens"] > 0

        lines = [line for line in curl(token, stream=True).splitlines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk)
        streamed = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
        )
        assert streamed.strip()
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

        children = children_of(up.pid)
        assert len(children) == 2  # one worker, one edge
    finally:
        code = up.stop(signal.SIGINT, timeout=60)
    assert code == 0, up.log()
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in children), "clawgate up left a child process behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{BASE_URL}/healthz", timeout=2)
    assert "Traceback" not in up.log()

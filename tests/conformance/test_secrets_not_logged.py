"""Auth's "never log a secret, not even in debug logs": both processes at debug level, requests
with the right and wrong token and password, then a search of everything they wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import openai

from devkit.processes import (
    Process,
    echo_config,
    edge_answers,
    free_port,
    wait_until,
    worker_serving,
    write_config,
)

TOKEN = "tok-SECRET-5f1e2d3c4b5a"
PASSWORD = "pw-SECRET-a1b2c3d4e5f6"
WORKER_SECRET = "wk-SECRET-0a9b8c7d6e5f"
WRONG = "wrong-SECRET-deadbeef00"


def debug_process(config_path: Path, log: Path, *command: str) -> Process:
    argv = [
        sys.executable,
        "-m",
        "clawgate.cli",
        "--config",
        str(config_path),
        "--log-level",
        "debug",
    ]
    return Process([*argv, *command], log).start()


def test_no_secret_in_debug_logs(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["worker"]["sharedSecret"] = WORKER_SECRET
    config["gateway"]["auth"] = {"mode": "token", "token": TOKEN}
    token_path = write_config(tmp_path, config, "token.json5")
    token_port, password_port = config["gateway"]["port"], free_port()
    config["gateway"] = {
        **config["gateway"],
        "port": password_port,
        "auth": {"mode": "password", "password": PASSWORD},
    }
    password_path = write_config(tmp_path, config, "password.json5")

    logs = [tmp_path / name for name in ("worker.log", "edge-token.log", "edge-password.log")]
    worker = debug_process(token_path, logs[0], "worker")
    edges: list[Process] = []
    try:
        wait_until(lambda: worker_serving(config["worker"]["listen"]), 60, "worker", worker)
        edges = [
            debug_process(token_path, logs[1], "edge"),
            debug_process(password_path, logs[2], "edge"),
        ]
        urls = [f"http://127.0.0.1:{port}" for port in (token_port, password_port)]
        for edge, url in zip(edges, urls, strict=True):
            wait_until(lambda url=url: edge_answers(url), 30, url, edge)  # type: ignore[misc]

        for url, secret in zip(urls, (TOKEN, PASSWORD), strict=True):
            for key in (secret, WRONG):
                sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
                try:
                    sdk.chat.completions.create(
                        model="openclaw", messages=[{"role": "user", "content": "hi"}]
                    )
                    sdk.chat.completions.create(
                        model="openclaw", messages=[{"role": "user", "content": "hi"}], stream=True
                    ).close()
                    sdk.models.list()
                except openai.AuthenticationError:
                    assert key == WRONG
            httpx.post(
                f"{url}/v1/chat/completions", headers={"Authorization": f"Basic {WRONG}"}, json={}
            )
    finally:
        for process in (*edges, worker):
            process.stop()

    written = "".join(log.read_text(errors="replace") for log in logs)
    assert "DEBUG" in written  # debug logging was really on
    for secret in (TOKEN, PASSWORD, WORKER_SECRET, WRONG):
        assert secret not in written, f"{secret} appears in the logs"

"""compose.yaml: valid against the Compose Specification's schema, and the topology it
describes runs: the same commands and environment as local processes, hostnames mapped to
127.0.0.1, the machine's PostgreSQL standing in for the postgres service."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from jsonschema import Draft201909Validator

from devkit.processes import REPO_ROOT, Process, edge_answers, wait_until, worker_serving
from tests.support.postgres import POSTGRES_URL, requires_postgres
from tests.support.schemas import assert_valid

COMPOSE_FILE = REPO_ROOT / "compose.yaml"
# The Compose Specification's JSON schema, as Debian's docker-compose package ships it.
COMPOSE_SCHEMA = Path(__file__).resolve().parents[1] / "support" / "compose_spec.json"
HOSTNAMES = ("agent-worker", "postgres")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = Draft201909Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []
    broken = copy.deepcopy(compose())
    broken["services"]["edge"]["portz"] = ["1:1"]
    assert schema_errors(broken)  # the check can fail


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed"
)
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENCLAW_GATEWAY_TOKEN": "x", "CLAWGATE_WORKER_SECRET": "y"},
    )
    assert result.returncode == 0, result.stderr


def interpolate(value: str, environ: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if environ.get(name):
            return environ[name]
        if operator == "?":
            raise AssertionError(f"compose needs {name}: {argument}")
        return argument or ""

    return _VARIABLE.sub(replace, value)


def local_command(
    service: dict[str, Any], environ: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The service's command and environment for a local process, hostnames mapped."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        mounts[target] = str((REPO_ROOT / source).resolve())
    argv = [mounts.get(argument, argument) for argument in service["command"]]
    env = {}
    for name, value in service["environment"].items():
        value = interpolate(str(value), environ)
        for hostname in HOSTNAMES:
            value = value.replace(f"@{hostname}:", "@127.0.0.1:").replace(
                f"///{hostname}:", "///127.0.0.1:"
            )
        env[name] = value
    return [sys.executable, "-m", "clawgate.cli", *argv], env


async def ensure_compose_database() -> None:
    """Creates the role and database compose's postgres service would have."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'clawgate'"):
            await connection.execute("CREATE ROLE clawgate LOGIN PASSWORD 'clawgate'")
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = 'clawgate'"):
            await connection.execute("CREATE DATABASE clawgate OWNER clawgate")
    finally:
        await connection.close()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[str]:
    asyncio.run(ensure_compose_database())
    services = compose()["services"]
    environ = {
        "OPENCLAW_GATEWAY_TOKEN": "compose-topology-token",
        "CLAWGATE_WORKER_SECRET": "compose-worker-secret",
    }
    worker_argv, worker_env = local_command(services["agent-worker"], environ)
    edge_argv, edge_env = local_command(services["edge"], environ)
    worker = Process(worker_argv, tmp_path / "worker.log", worker_env).start()
    edge: Process | None = None
    try:
        wait_until(lambda: worker_serving("127.0.0.1:50051"), 60, "compose worker", worker)
        edge = Process(edge_argv, tmp_path / "edge.log", edge_env).start()
        port = services["edge"]["ports"][0].split(":")[0]
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: edge_answers(base_url), 30, "compose edge", edge)
        yield base_url
    finally:
        if edge is not None:
            edge.stop()
        worker.stop()


@requires_postgres
def test_the_compose_topology_serves_a_turn(topology: str) -> None:
    response = httpx.post(
        f"{topology}/v1/chat/completions",
        headers={"Authorization": "Bearer compose-topology-token"},
        json={
            "model": "openclaw:main",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 12,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert_valid("CreateChatCompletionResponse", response.json())
    assert response.json()["choices"][0]["message"]["content"].strip()
    probe = compose()["services"]["agent-worker"]["healthcheck"]["test"][1:]
    result = subprocess.run(
        [sys.executable, "-m", "clawgate.cli", *probe[1:]], capture_output=True, text=True
    )
    assert result.returncode == 0 and "SERVING" in result.stdout

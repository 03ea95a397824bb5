"""The gRPC contract is checked as a public one: `buf lint`, `buf breaking` (wire rules) against
the contract as last released, and a client in another language (Node's @grpc/grpc-js, loading
protos/ at run time) running a turn on a real worker."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.processes import REPO_ROOT, echo_config, start_worker, write_config

PROTOS = REPO_ROOT / "protos"
NODE_DIR = REPO_ROOT / "tests" / "node"
LAST_RELEASE = PROTOS / "releases" / "v0.1.0.binpb"


@pytest.fixture(scope="module")
def buf() -> Path:
    """The buf CLI from npm (`@bufbuild/buf`), installed from tests/node's lock file once."""
    binary = NODE_DIR / "node_modules" / ".bin" / "buf"
    if not binary.exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600
        )
    return binary


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_contract_passes_buf_lint_with_a_comment_on_everything(buf: Path) -> None:
    result = run([buf, "lint"], PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_is_wire_compatible_with_its_last_release(buf: Path) -> None:
    result = run([buf, "breaking", "--against", LAST_RELEASE], PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_refuses_a_change_of_wire_type(buf: Path, tmp_path: Path) -> None:
    """The check above can fail: a field whose number is reused with another type is refused."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    proto = copy / "clawgate" / "agent" / "v1" / "agent_service.proto"
    text = proto.read_text()
    assert "  string session_key = 2;" in text
    proto.write_text(text.replace("  string session_key = 2;", "  int64 session_key = 2;", 1))
    result = run([buf, "breaking", "--against", LAST_RELEASE], copy)
    assert result.returncode != 0
    assert "session_key" in result.stdout


def test_a_node_grpc_client_runs_a_turn_from_the_proto_files(buf: Path, tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    address = config["worker"]["listen"]
    worker = start_worker(write_config(tmp_path, config), address, tmp_path / "worker.log")
    try:
        result = run(
            ["node", NODE_DIR / "run_turn.js", address, "main", "node:1", "hello from node"],
            REPO_ROOT,
        )
    finally:
        worker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"agents": ["main", "beta", "slow"]}
    kinds = [
        next(key for key in ("started", "delta", "finished", "error") if line.get(key))
        for line in lines[1:]
    ]
    assert kinds[0] == "started" and kinds[-1] == "finished" and set(kinds[1:-1]) == {"delta"}
    text = "".join(line["delta"]["text"] for line in lines[1:] if line.get("delta"))
    assert text == "echo: hello from node [turns=0]"
    assert lines[-1]["finished"]["finish_reason"] == "FINISH_REASON_STOP"

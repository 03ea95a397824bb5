"""`clawgate agent` runs a turn through the worker's RunTurn and streams it to stdout."""

from __future__ import annotations

import subprocess
import uuid

from devkit.processes import REPO_ROOT, Stack, clawgate


def run_agent(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        clawgate(stack.config_path, "agent", *args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_agent_streams_the_reply(echo_stack: Stack) -> None:
    result = run_agent(echo_stack, "--agent", "beta", "--message", "hello cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hello cli [turns=0]\n"
    assert "session: agent:beta:cli:" in result.stderr


def test_agent_continues_a_session_key(echo_stack: Stack) -> None:
    key = f"cli-test:{uuid.uuid4().hex}"
    assert run_agent(echo_stack, "--message", "one", "--session-key", key).returncode == 0
    second = run_agent(echo_stack, "--message", "two", "--session-key", key)
    assert second.stdout == "echo: two [turns=2]\n"


def test_agent_reports_an_unknown_agent(echo_stack: Stack) -> None:
    result = run_agent(echo_stack, "--agent", "nobody", "--message", "x")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "nobody" in result.stderr
    assert "Traceback" not in result.stderr

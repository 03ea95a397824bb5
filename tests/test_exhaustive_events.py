"""mypy holds every dispatch on a turn event to every kind: a `match` that forgets one fails
the type check (tests/test_lint.py runs mypy on the tree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devkit.processes import REPO_ROOT

HANDLED_ALL = (
    "pb.TextDelta() | pb.ReasoningDelta() | pb.ToolCallDelta() | pb.ToolRunStarted()"
    " | pb.ToolRunFinished()"
)


def check(tmp_path: Path, cases: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "dispatch.py"
    module.write_text(
        "from typing import assert_never\n"
        "from clawgate.agent.v1 import agent_service_pb2 as pb\n"
        "from gateway_edge.remote_turn import Event\n"
        "def handle(event: Event) -> None:\n"
        "    match event:\n"
        f"        case {cases} | pb.TurnFinished():\n"
        "            pass\n"
        "        case _:\n"
        "            assert_never(event)\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(module)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("forgotten", ["pb.ToolRunFinished()", "pb.TextDelta()"])
def test_a_forgotten_kind_fails_the_type_check(tmp_path: Path, forgotten: str) -> None:
    cases = " | ".join(case for case in HANDLED_ALL.split(" | ") if case != forgotten)
    result = check(tmp_path, cases)
    assert result.returncode == 1, result.stdout
    assert 'Argument 1 to "assert_never" has incompatible type' in result.stdout
    assert forgotten.removeprefix("pb.").removesuffix("()") in result.stdout


def test_every_kind_handled_passes(tmp_path: Path) -> None:
    result = check(tmp_path, HANDLED_ALL)
    assert result.returncode == 0, result.stdout

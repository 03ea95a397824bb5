"""The README's examples, run as a newcomer runs them: its curl commands and Python snippets,
taken from README.md as written, against `clawgate up` on the embedded model with a fresh
HOME; its config snippets through the config loader."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from devkit.processes import REPO_ROOT, start_up_with_fresh_home
from services.config import parse_config

pytestmark = pytest.mark.slow
README = (REPO_ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.DOTALL)
SHELL = [code for language, code in BLOCKS if language == "bash" and code.startswith("curl ")]
# The webhook example needs hooks on, which `clawgate up` leaves off: its body is checked, and
# tests/integration/test_hooks.py sends requests of its shape to a gateway with hooks.
HOOK_CURLS = [code for code in SHELL if "/hooks/" in code]
CURLS = [code for code in SHELL if code not in HOOK_CURLS]
PYTHON = [code for language, code in BLOCKS if language == "python"]
CONFIGS = [code for language, code in BLOCKS if language == "json5"]


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`clawgate up` as the README's first command leaves it: the starter config's token."""
    up, _ = start_up_with_fresh_home(tmp_path_factory.mktemp("readme"))
    try:
        found = re.search(r"token: (\S+)", up.log())
        assert found is not None
        yield found.group(1)
    finally:
        up.stop(signal.SIGINT, timeout=60)
    log = up.log()
    assert "Traceback" not in log
    assert "GET /readyz 503" not in log  # a normal start says nothing of its own probes
    assert "edge stopped" in log and "worker stopped" in log


def run(argv: list[str], code: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, code.replace("YOUR_TOKEN", token)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


def test_the_readme_has_the_examples_this_file_runs() -> None:
    assert len(CURLS) == 3 and len(PYTHON) == 2 and len(CONFIGS) >= 2
    assert all(code.startswith("curl -sS ") for code in CURLS)  # no progress meter
    [hook] = HOOK_CURLS
    body = re.search(r"-d '(\{.*?\})'", hook, re.DOTALL)
    assert body is not None and json.loads(body.group(1))["message"]


def test_the_curl_example_prints_a_completion(token: str) -> None:
    result = run(["bash", "-c"], CURLS[0], token)
    assert result.returncode == 0 and result.stderr == ""
    completion = json.loads(result.stdout)
    assert completion["choices"][0]["message"]["content"].strip()
    assert completion["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_streaming_curl_example_prints_data_lines_and_done(token: str) -> None:
    result = run(["bash", "-c"], CURLS[1], token)
    assert result.returncode == 0 and result.stderr == ""
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_the_sdk_example_prints_the_answer(token: str) -> None:
    result = run([sys.executable, "-c"], PYTHON[0], token)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed and printed != "None"


def test_the_tools_example_prints_an_answer_in_words(token: str) -> None:
    """After the tool's result the model answers: the README's `final...content` is text."""
    for _ in range(3):  # the model samples: every run must end in words, not another call
        result = run([sys.executable, "-c"], PYTHON[1], token)
        assert result.returncode == 0, result.stderr
        printed = result.stdout.strip()
        assert printed and printed != "None"


@pytest.mark.parametrize("code", CONFIGS)
def test_the_config_examples_load(code: str) -> None:
    parse_config(code, "README.md")

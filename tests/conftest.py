from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.processes import Stack, echo_config, start_stack
from devkit.upstream import UpstreamStandIn


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamStandIn]:
    """An OpenAI-compatible upstream stand-in, for agents on the openai-compatible provider."""
    with UpstreamStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def echo_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamStandIn
) -> Iterator[Stack]:
    """A real worker (SQLite file) and a real edge, shared by one test module; agents as in
    `echo_config`, the upstream ones on the stand-in."""
    tmp_path: Path = tmp_path_factory.mktemp("stack")
    config = echo_config(tmp_path, upstream.base_url)
    config["gateway"]["keepAliveSeconds"] = 0.25
    stack = start_stack(tmp_path, config)
    yield stack
    stack.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.conformance.test_generated_inputs import STATS

    if STATS["requests"]:
        terminalreporter.write_line(
            f"generated-input run: {STATS['requests']} requests sent, {STATS['5xx']} got a 5xx, "
            f"{STATS['tracebacks']} showed a traceback"
        )

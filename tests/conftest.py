from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Stack, echo_config, start_stack


@pytest.fixture(scope="module")
def echo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real worker (echo provider, SQLite file) and a real edge, shared by one test module."""
    tmp_path: Path = tmp_path_factory.mktemp("stack")
    stack = start_stack(tmp_path, echo_config(tmp_path))
    yield stack
    stack.stop()

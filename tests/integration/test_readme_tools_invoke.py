"""The README's `/tools/invoke` example as a reader follows it: the install step, the config
keys added to the starter config, `clawgate up`, then the curl. Its own module: `clawgate up`
takes the README's port, which test_readme_examples.py holds for its whole module."""

from __future__ import annotations

import json
import signal

import json5
import pytest

from devkit.processes import start_up_with_fresh_home
from tests.integration.test_readme_examples import BLOCKS, CONFIGS, CURLS, run

pytestmark = pytest.mark.slow
INSTALLS = [code.strip() for language, code in BLOCKS if language == "bash" and "install" in code]


def _with_the_time_server(starter: str) -> str:
    """The starter config with the README's tools block added, as it tells a reader to."""
    (block,) = [code for code in CONFIGS if "mcp-server-time" in code]
    config, added = json5.loads(starter), json5.loads(block)
    for key, value in added.items():
        config[key] = {**config.get(key, {}), **value}
    return json.dumps(config)


def test_the_tools_invoke_example_prints_the_time(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The README's `/tools/invoke` curl, after its install step and its config: on
    `clawgate up` with that config it calls the time server without a model turn."""
    assert "pip install mcp-server-time" in INSTALLS  # what the test environment has installed
    up, home = start_up_with_fresh_home(tmp_path_factory.mktemp("tools"), _with_the_time_server)
    try:
        config = json5.loads((home / ".clawgate" / "clawgate.json5").read_text())
        result = run(["bash", "-c"], CURLS[2], config["gateway"]["auth"]["token"])
    finally:
        up.stop(signal.SIGINT, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["result"]["timezone"] == "UTC"

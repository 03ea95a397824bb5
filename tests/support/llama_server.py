"""`python -m llama_cpp.server` with the model loaded as the embedded provider loads it: without
llama.cpp's extra buffer types, whose AMX path crashes the first decode on a Xeon with AMX
(see `agent_worker.providers.llama_controls.without_extra_buffer_types`). The server is otherwise
llama-cpp-python's own.

    python -m tests.support.llama_server --model PATH --port N …
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from agent_worker.providers.llama_controls import without_extra_buffer_types


@contextmanager
def llama_server(log_dir: Path, *options: str) -> Iterator[str]:
    """This server on a free port with the packaged model (and `options`, the server's own
    flags); yields its base URL (`…/v1`) once it answers."""
    from agent_worker.providers.llama_cpp import default_model_path
    from devkit.processes import Process, free_port, wait_until

    port = free_port()
    argv = [sys.executable, "-m", "tests.support.llama_server"]
    argv += ["--model", str(default_model_path()), "--host", "127.0.0.1", "--port", str(port)]
    server = Process([*argv, "--verbose", "False", *options], log_dir / "llama_server.log").start()
    base_url = f"http://127.0.0.1:{port}/v1"

    def serving() -> bool:
        try:
            return httpx.get(f"{base_url}/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, 120, "llama_cpp.server", server)
        yield base_url
    finally:
        server.stop()


if __name__ == "__main__":
    with without_extra_buffer_types():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)

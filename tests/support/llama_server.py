"""`python -m llama_cpp.server` with the model loaded as the embedded provider loads it: without
llama.cpp's extra buffer types, whose AMX path crashes the first decode on a Xeon with AMX
(see `agent_worker.providers.llama_controls.without_extra_buffer_types`). The server is otherwise
llama-cpp-python's own.

    python -m tests.support.llama_server --model PATH --port N …
"""

from __future__ import annotations

import runpy

from agent_worker.providers.llama_controls import without_extra_buffer_types

if __name__ == "__main__":
    with without_extra_buffer_types():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)

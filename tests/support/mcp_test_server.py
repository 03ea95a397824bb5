"""An MCP server for the tool tests, built on the `mcp` SDK's MCPServer, over stdio or
streamable HTTP. Its tools add, fail, hang (writes "cancelled" to --events when its call is
cancelled), big (a long result) and crash (the process exits at once).

    python tests/support/mcp_test_server.py --http PORT --events FILE
    python tests/support/mcp_test_server.py --stdio --events FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("clawgate-test-tools")
events_file: Path | None = None


def note(event: str) -> None:
    if events_file is not None:
        with events_file.open("a") as events:
            events.write(event + "\n")


@server.tool(description="Adds two integers.")
def add(a: int, b: int) -> str:
    note(f"add {a} {b}")
    return str(a + b)


@server.tool(description="Always fails.")
def fail(reason: str = "broken on purpose") -> str:
    raise ToolError(reason)  # a deliberate failure: its message reaches the client


@server.tool(description="Waits, then answers.")
async def hang(seconds: float = 3600) -> str:
    note("hang started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note("cancelled")
        raise
    return "done waiting"


@server.tool(description="Answers with `size` letters.")
def big(size: int) -> str:
    return "x" * size


@server.tool(description="Exits the server process.")
def crash() -> str:
    note("crash")
    os._exit(3)


def main() -> None:
    global events_file
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--events")
    args = parser.parse_args()
    events_file = Path(args.events) if args.events else None
    note("server started")
    if args.stdio:
        asyncio.run(server.run_stdio_async())
    else:
        asyncio.run(server.run_streamable_http_async(host="127.0.0.1", port=args.http))


if __name__ == "__main__":
    main()

"""One configured MCP server as a worker uses it: one client per worker, through the `mcp` SDK.

The client lives in a task of its own (the SDK's transports are task groups, which must be left
by the task that entered them); tool calls from any turn go through it. It connects on first
need, and when it breaks (a stdio server that exited, a remote one gone) the next need connects
again, after a back-off that doubles from 1 s to 30 s. A server that cannot connect makes its
tools unavailable, logged once per outage; the worker and its other tools go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.mcp_config import McpServerConfig

if TYPE_CHECKING:  # the SDK is imported on first use: it adds ~30 MB to a worker without tools
    import mcp_types
    from mcp import Client

log = logging.getLogger("clawgate.worker.tools")
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ServerTool:
    name: str  # as the server names it
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    text: str
    is_error: bool


class ServerUnavailable(Exception):
    """The server could not be reached; the message says why (never its env values)."""


class McpServer:
    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.tools: dict[str, ServerTool] = {}
        self.state = "idle"  # idle | connecting | ready | unavailable
        self.problem = ""
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._backoff = FIRST_BACKOFF_SECONDS
        self._next_attempt = 0.0

    @property
    def request_timeout(self) -> float:
        return self.config.request_timeout_ms / 1000

    async def connected(self) -> Client:
        """The live client, connecting first when needed; raises ServerUnavailable."""
        if self._owner is None or self._owner.done():
            if time.monotonic() < self._next_attempt:
                raise ServerUnavailable(self.problem or "the server is restarting")
            self._ready.clear()
            self._broken.clear()
            self.state = "connecting"
            self._owner = asyncio.create_task(self._own(), name=f"mcp:{self.name}")
        timeout = self.config.connection_timeout_ms / 1000
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._owner}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
        if self._client is not None and self.state == "ready":
            return self._client
        if not self._owner.done():  # still not connected: give up this attempt
            self._owner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._owner
            self._fail(f"did not connect within {timeout:g}s")
        raise ServerUnavailable(self.problem)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Runs one tool; its own error comes back as an error outcome. Raises
        ServerUnavailable or TimeoutError; a cancelled call is cancelled at the server too."""
        client = await self.connected()
        try:
            result = await client.call_tool(
                tool, arguments, read_timeout_seconds=self.request_timeout
            )
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as error:
            if self._owner is None or self._owner.done() or _connection_lost(error):
                self.broke(f"the call failed: {error}")
                raise ServerUnavailable(f"the server went away during the call ({error})") from None
            return ToolOutcome(f"{type(error).__name__}: {error}", True)
        return ToolOutcome(result_text(result), result.is_error)

    def broke(self, why: str) -> None:
        """Drops the connection; the next need connects again (after the back-off)."""
        if self.state == "ready":
            log.warning("mcp server %s broke: %s", self.name, why)
        self._fail(why)
        self._broken.set()

    async def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None and not owner.done():
            self._broken.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(owner, 5)
        self.state = "idle"

    async def _own(self) -> None:
        """Holds the client open until it breaks or the worker stops."""
        from mcp import Client

        try:
            async with Client(
                self._transport(), read_timeout_seconds=self.request_timeout
            ) as client:
                listing = await client.list_tools()
                keep = self.config.tool_filter.keeps
                self.tools = {
                    tool.name: ServerTool(tool.name, tool.description or "", tool.input_schema)
                    for tool in listing.tools
                    if keep(tool.name)
                }
                self._client = client
                self.state, self.problem = "ready", ""
                self._backoff = FIRST_BACKOFF_SECONDS
                log.info("mcp server %s: %d tools", self.name, len(self.tools))
                self._ready.set()
                await self._broken.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the SDK raises exception groups from its task groups
            doing = f"starting {self.config.command}" if self.config.is_stdio else "connecting"
            self._fail(f"{doing}: {_reason(error)}")
        finally:
            self._client = None
            if self.state == "ready":
                self.state = "idle"

    def _fail(self, why: str) -> None:
        if self.state != "unavailable":
            log.warning(
                "mcp server %s is unavailable: %s (retrying in %gs)", self.name, why, self._backoff
            )
        self.state, self.problem = "unavailable", why
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)

    def _transport(self) -> Any:
        from mcp.client.sse import sse_client
        from mcp.client.stdio import StdioServerParameters

        config = self.config
        if config.command is not None:
            return StdioServerParameters(
                command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
            )
        assert config.url is not None
        connect = config.connection_timeout_ms / 1000
        if config.transport == "sse":
            return sse_client(config.url, headers=config.headers, timeout=connect)
        return _streamable_http(config.url, config.headers)


@contextlib.asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The SDK's transport with the configured headers; the transport leaves closing an HTTP
    client it was given to its owner."""
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


def result_text(result: mcp_types.CallToolResult) -> str:
    """The result as the model reads it: its text parts, else its structured content."""
    import mcp_types

    parts = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    if not any(parts) and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _connection_lost(error: BaseException) -> bool:
    text = str(error).lower()
    return "closed" in text or "connection" in text


def _reason(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

"""The agents' own tools: every configured MCP server's tools, as `<server>__<tool>`, offered to
an agent only as far as its `tools.allow` / `tools.deny` let it, and run here on the worker.

A tool's failure never fails the turn: its error, a timeout or an unreachable server becomes the
tool's result (marked as an error) for the model to read. One log line per call at info
(arguments and results only at debug); `${VAR}` values in a server's `env` or `headers` never
reach a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import jsonschema

from agent_worker.agents import Agent
from agent_worker.domain import ChatMessage, Tool, ToolCall
from agent_worker.events import ToolRunFinished, ToolRunStarted
from agent_worker.mcp_server import McpServer, ServerUnavailable, ToolOutcome
from agent_worker.metrics import WorkerMetrics
from services import tracing
from services.mcp_config import TOOL_NAME_SEPARATOR, McpConfig, matches_any
from services.spans import NO_SPAN, Span

log = logging.getLogger("clawgate.worker.tools")
SUMMARY_CHARACTERS = 200


def qualified(server: str, tool: str) -> str:
    return f"{server}{TOOL_NAME_SEPARATOR}{tool}"


class AgentTools:
    def __init__(self, config: McpConfig, metrics: WorkerMetrics | None = None) -> None:
        self._servers = {
            name: McpServer(name, server)
            for name, server in config.servers.items()
            if server.enabled
        }
        self._max_result_bytes = config.max_result_bytes
        self._metrics = metrics or WorkerMetrics()
        self._warming: set[asyncio.Task[None]] = set()

    @property
    def servers(self) -> Iterable[McpServer]:
        return self._servers.values()

    def servers_for(self, agent: Agent) -> list[McpServer]:
        """The servers whose tools the agent's allow list may reach."""
        if not agent.tools_allow:
            return []
        prefixes = [pattern.split(TOOL_NAME_SEPARATOR, 1)[0] for pattern in agent.tools_allow]
        return [server for name, server in self._servers.items() if matches_any(name, prefixes)]

    async def offer(self, agent: Agent) -> tuple[Tool, ...]:
        """The tools the agent may use now (connecting their servers first where needed)."""
        servers = self.servers_for(agent)
        if not servers:
            return ()
        # A server that failed before is tried again in the background: a turn waits for a
        # server's first connection only, never for one that may hang until its timeout.
        retry = [server for server in servers if server.state == "unavailable"]
        if retry:
            self._in_background(retry)
        await asyncio.gather(*(self._connect(s) for s in servers if s.state != "unavailable"))
        return tuple(
            Tool(name, tool.description, json.dumps(tool.input_schema))
            for server in servers
            for tool in server.tools.values()
            if agent.may_use(name := qualified(server.name, tool.name))
        )

    def known_for(self, agent: Agent) -> list[str]:
        """The agent's tools as far as their servers have been listed (for ListAgents)."""
        return [
            name
            for server in self.servers_for(agent)
            for tool in server.tools
            if agent.may_use(name := qualified(server.name, tool))
        ]

    def warm_up(self, agents: Iterable[Agent]) -> None:
        """Connects, in the background, every server an agent may use: the first turn then
        finds its tools listed, and so does ListAgents."""
        servers = {server.name: server for agent in agents for server in self.servers_for(agent)}
        self._in_background(servers.values())

    def _in_background(self, servers: Iterable[McpServer]) -> None:
        for server in servers:
            task = asyncio.create_task(self._connect(server))
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    async def run(self, call: ToolCall) -> ToolOutcome:
        """Runs one call the model made; every failure is an error outcome."""
        return (await self.invoke(call))[1]

    async def input_schema(self, agent: Agent, name: str) -> dict[str, Any] | None:
        """The input schema of a tool the agent may use now; None when it may not (or no
        server offers it)."""
        if not agent.may_use(name):
            return None
        await self.offer(agent)  # connects its server if it was not yet
        server_name, _, tool = name.partition(TOOL_NAME_SEPARATOR)
        server = self._servers.get(server_name)
        found = server.tools.get(tool) if server is not None else None
        return None if found is None else found.input_schema

    async def invoke(self, call: ToolCall) -> tuple[str, ToolOutcome]:
        """Runs one call: how it ended ("ok", "error", "timeout", "unavailable") and its
        result, bounded by mcp.maxResultBytes; logged and counted as every call is."""
        server_name, _, tool = call.name.partition(TOOL_NAME_SEPARATOR)
        server = self._servers.get(server_name)
        started = time.monotonic()
        outcome = "cancelled"
        result = ToolOutcome("", True)
        span = _tool_span(call)
        try:
            with span:
                if server is None or tool not in server.tools:
                    outcome, result = "error", ToolOutcome(f"unknown tool {call.name!r}", True)
                else:
                    outcome, result = await self._call(server, tool, call)
                if span.live:
                    _tool_ended(span, call, outcome, result)
            return outcome, result
        finally:
            seconds = time.monotonic() - started
            self._metrics.tool_calls.labels(server_name, tool, outcome).inc()
            self._metrics.tool_call_seconds.labels(server_name, tool).observe(seconds)
            log.info("tool %s: %s in %.0f ms", call.name, outcome, seconds * 1000)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("tool %s(%s) -> %s", call.name, call.arguments, result.text)

    async def run_step(
        self, calls: list[ToolCall], steps: list[ChatMessage]
    ) -> AsyncIterator[ToolRunStarted | ToolRunFinished]:
        """Runs one step's calls together; their results join `steps` in call order.
        Cancelling the turn cancels the calls still running (at their servers too)."""
        for call in calls:
            yield ToolRunStarted(call.id, call.name, call.arguments)

        async def timed(call: ToolCall) -> tuple[ToolCall, ToolOutcome, float]:
            started = time.monotonic()
            outcome = await self.run(call)
            return call, outcome, time.monotonic() - started

        running = [asyncio.ensure_future(timed(call)) for call in calls]
        results: dict[str, ChatMessage] = {}
        try:
            for next_done in asyncio.as_completed(running):
                call, outcome, seconds = await next_done
                results[call.id] = ChatMessage(
                    "tool", outcome.text, tool_call_id=call.id, name=call.name
                )
                yield ToolRunFinished(
                    call.id,
                    call.name,
                    summary(outcome.text),
                    round(seconds * 1000),
                    outcome.is_error,
                )
        finally:
            for task in running:
                task.cancel()
        steps.extend(results[call.id] for call in calls)

    async def _call(self, server: McpServer, tool: str, call: ToolCall) -> tuple[str, ToolOutcome]:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as error:
            return "error", ToolOutcome(f"the arguments are not valid JSON: {error}", True)
        if not isinstance(arguments, dict):
            return "error", ToolOutcome("the arguments must be a JSON object", True)
        try:
            async with asyncio.timeout(server.request_timeout):
                result = await server.call(tool, arguments)
        except TimeoutError:
            return "timeout", ToolOutcome(
                f"the tool did not answer within {server.request_timeout:g}s", True
            )
        except ServerUnavailable as error:
            return "unavailable", ToolOutcome(f"the tool's server is unavailable: {error}", True)
        return ("error" if result.is_error else "ok"), self._bounded(result)

    def _bounded(self, result: ToolOutcome) -> ToolOutcome:
        encoded = result.text.encode()
        if len(encoded) <= self._max_result_bytes:
            return result
        kept = encoded[: self._max_result_bytes].decode(errors="ignore")
        note = f"\n[truncated: the result had {len(encoded)} bytes, {self._max_result_bytes} shown]"
        return ToolOutcome(kept + note, result.is_error)

    @staticmethod
    async def _connect(server: McpServer) -> None:
        try:
            await server.connected()
        except ServerUnavailable:
            pass  # logged once by the server; its tools are not offered meanwhile

    async def close(self) -> None:
        for task in self._warming:
            task.cancel()
        await asyncio.gather(*(server.close() for server in self._servers.values()))


def _tool_span(call: ToolCall) -> Span:
    if not tracing.active():
        return NO_SPAN
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id,
        "gen_ai.tool.type": "function",
    }
    return tracing.span(f"execute_tool {call.name}", attributes=attributes)


def _tool_ended(span: Span, call: ToolCall, outcome: str, result: ToolOutcome) -> None:
    span.set("clawgate.tool.outcome", outcome)
    if outcome != "ok":  # the result's text is the tool's: content, not said here
        span.fail(f"the tool call ended with {outcome}", outcome)
    if tracing.capture_content():
        span.set("gen_ai.tool.call.arguments", call.arguments)
        span.set("gen_ai.tool.call.result", result.text)


def summary(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARACTERS else text[: SUMMARY_CHARACTERS - 1] + "…"


def argument_problem(arguments_json: str, schema: dict[str, Any]) -> str | None:
    """Why these arguments cannot go to a tool with this input schema; None when they can."""
    try:
        arguments = json.loads(arguments_json or "{}")
    except ValueError as error:
        return f"args is not valid JSON: {error}"
    if not isinstance(arguments, dict):
        return "args must be a JSON object"
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        worst = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except jsonschema.exceptions.SchemaError:
        return None  # a server's broken schema is the server's to enforce
    if worst is None:
        return None
    where = ".".join(str(part) for part in worst.absolute_path)
    return f"args{'.' + where if where else ''}: {worst.message}"

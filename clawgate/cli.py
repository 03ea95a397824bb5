"""The `clawgate` command: up, edge, worker, agent, status, probe."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from services.config import ClawgateConfig, ConfigError, config_path, load_config
from services.ids import time_ordered_uuid
from services.logging import configure_logging

log = logging.getLogger("clawgate")
T = TypeVar("T")


def _load(args: argparse.Namespace) -> ClawgateConfig:
    return load_config(config_path(args.config))


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Runs on uvloop when it is installed (grpc.aio supports it): less time in the loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def run_worker(args: argparse.Namespace) -> int:
    from agent_worker.server import WorkerStartError, serve
    from services.memory import return_large_blocks_to_the_os

    return_large_blocks_to_the_os()
    configure_logging(args.log_level, "worker", args.log_format)
    try:
        run_async(serve(_load(args), args.listen, args.metrics_listen))
    except WorkerStartError as error:
        print(f"clawgate worker: refusing to start: {error}", file=sys.stderr)
        return 1
    return 0


def run_edge(args: argparse.Namespace) -> int:
    from gateway_edge.auth import AuthSetupError
    from gateway_edge.server import serve
    from services.memory import return_large_blocks_to_the_os
    from services.tracing import TracingSetupError

    return_large_blocks_to_the_os()
    configure_logging(args.log_level, "edge", args.log_format)
    config = _load(args)
    if args.workers:
        config = config.model_copy(
            update={
                "gateway": config.gateway.model_copy(update={"workers": args.workers.split(",")})
            }
        )
    try:
        serve(config, args.log_level)
    except (AuthSetupError, TracingSetupError) as error:
        print(f"clawgate edge: refusing to start: {error}", file=sys.stderr)
        return 2
    return 0


def run_up(args: argparse.Namespace) -> int:
    from clawgate.supervisor import run_up as supervise

    configure_logging(args.log_level, "up", args.log_format)
    return supervise(config_path(args.config), args.workers, args.log_level, args.log_format)


def run_agent(args: argparse.Namespace) -> int:
    from clawgate.agent_command import run_agent_turn

    configure_logging("warning", "agent")
    config = _load(args)
    address = args.worker or config.gateway.workers[0]
    session_key = args.session_key or f"agent:{args.agent}:cli:{time_ordered_uuid()}"
    return asyncio.run(
        run_agent_turn(address, args.agent, args.message, session_key, config.worker.shared_secret)
    )


def run_probe(args: argparse.Namespace) -> int:
    """Exits 0 when the worker's grpc.health.v1 status is SERVING (for container healthchecks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.worker) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"clawgate probe: {args.worker}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.worker}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def run_status(args: argparse.Namespace) -> int:
    """Prints the edge's view of its workers; exits 0 while at least one is serving."""
    import json
    import urllib.error
    import urllib.request

    from gateway_edge.auth import Authenticator, AuthSetupError

    config = _load(args)
    url = args.url or config.gateway.local_url
    # The same secret, found by the same rules (config, then environment), as the edge uses.
    try:
        auth = Authenticator.from_config(config.gateway.auth, config.gateway.bind)
        secret = auth.secret.decode()
    except AuthSetupError:
        secret = ""
    request = urllib.request.Request(f"{url}/status", headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError) as error:
        print(f"clawgate status: cannot reach the edge at {url}: {error}", file=sys.stderr)
        return 1
    print(f"edge {url}: {'ready' if status['ready'] else 'NOT READY'}")
    print(f"{'worker':<28} {'health':<12} turns in flight")
    for worker in status["workers"]:
        health = {True: "serving", False: "not serving", None: "unknown"}[worker["serving"]]
        if worker["serving"] is not False and not worker.get("answering", True):
            health = "not answering"  # its last health check timed out (frozen or cut off)
        print(f"{worker['address']:<28} {health:<12} {worker['turns_in_flight']}")
        for server in worker.get("tool_servers", ()):
            problem = f": {server['problem']}" if server["problem"] else ""
            print(f"  mcp {server['name']}: {server['state']}, {server['tools']} tools{problem}")
        for agent in worker.get("agents", ()):
            window = agent["context_window"]
            shown = f"{window} tokens" if window else "not known yet"
            print(f"  agent {agent['id']} ({agent['model']}): context window {shown}")
    return 0 if status["ready"] else 1


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options every command takes, before or after its name. On a command they default to
    SUPPRESS, so a value given before the command is not overwritten by the command's default."""

    def default(value: str | None) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--config",
        default=default(None),
        help="config file (default: $CLAWGATE_CONFIG or ~/.clawgate/clawgate.json5)",
    )
    parser.add_argument(
        "--log-level", default=default("info"), choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default=default("text"),
        choices=["text", "json"],
        help="json: one object per line",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawgate", description="OpenAI-compatible gateway for agents."
    )
    _global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)

    up = commands.add_parser(
        "up", parents=[common], help="run the edge and workers together (writes a starter config)"
    )
    up.add_argument("--workers", type=int, default=1, help="number of worker processes (default 1)")
    up.set_defaults(handler=run_up)

    edge = commands.add_parser("edge", parents=[common], help="run the HTTP edge")
    edge.add_argument(
        "--workers", help="comma-separated worker addresses (overrides gateway.workers)"
    )
    edge.set_defaults(handler=run_edge)

    worker = commands.add_parser("worker", parents=[common], help="run an agent worker")
    worker.add_argument("--listen", help="address to listen on (overrides worker.listen)")
    worker.add_argument(
        "--metrics-listen", help="host:port for /metrics (overrides worker.metricsListen)"
    )
    worker.set_defaults(handler=run_worker)

    agent = commands.add_parser(
        "agent", parents=[common], help="run one agent turn through a worker and stream the reply"
    )
    agent.add_argument("--agent", default="main", help="agent id (default: main)")
    agent.add_argument("--message", required=True, help="the user message")
    agent.add_argument("--session-key", help="continue this session (default: a fresh one)")
    agent.add_argument("--worker", help="worker address (default: the first of gateway.workers)")
    agent.set_defaults(handler=run_agent)
    status = commands.add_parser("status", parents=[common], help="the edge's view of its workers")
    status.add_argument("--url", help="edge base URL (default: from the config)")
    status.set_defaults(handler=run_status)

    probe = commands.add_parser(
        "probe", parents=[common], help="check a worker's health (exit 0 when serving)"
    )
    probe.add_argument("--worker", default="127.0.0.1:50051", help="worker address")
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    probe.set_defaults(handler=run_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"clawgate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

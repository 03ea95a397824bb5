"""The `clawgate` command: up, edge, worker, agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid

from services.config import ClawgateConfig, ConfigError, config_path, load_config
from services.logging import configure_logging

log = logging.getLogger("clawgate")


def _load(args: argparse.Namespace) -> ClawgateConfig:
    return load_config(config_path(args.config))


def run_worker(args: argparse.Namespace) -> int:
    from agent_worker.server import serve

    configure_logging(args.log_level, "worker")
    asyncio.run(serve(_load(args), args.listen))
    return 0


def run_edge(args: argparse.Namespace) -> int:
    from gateway_edge.auth import AuthSetupError
    from gateway_edge.server import serve

    configure_logging(args.log_level, "edge")
    config = _load(args)
    if args.workers:
        config = config.model_copy(
            update={
                "gateway": config.gateway.model_copy(update={"workers": args.workers.split(",")})
            }
        )
    try:
        serve(config, args.log_level)
    except AuthSetupError as error:
        print(f"clawgate edge: refusing to start: {error}", file=sys.stderr)
        return 2
    return 0


def run_up(args: argparse.Namespace) -> int:
    from services.supervisor import run_up as supervise

    configure_logging(args.log_level, "up")
    return supervise(config_path(args.config), args.workers, args.log_level)


def run_agent(args: argparse.Namespace) -> int:
    from services.agent_client import run_agent_turn

    configure_logging("warning", "agent")
    config = _load(args)
    address = args.worker or config.gateway.workers[0]
    session_key = args.session_key or f"agent:{args.agent}:cli:{uuid.uuid4()}"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawgate", description="OpenAI-compatible gateway for agents."
    )
    parser.add_argument(
        "--config", help="config file (default: $CLAWGATE_CONFIG or ~/.clawgate/clawgate.json5)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run the edge and workers together (writes a starter config)"
    )
    up.add_argument("--workers", type=int, default=1, help="number of worker processes (default 1)")
    up.set_defaults(handler=run_up)

    edge = commands.add_parser("edge", help="run the HTTP edge")
    edge.add_argument(
        "--workers", help="comma-separated worker addresses (overrides gateway.workers)"
    )
    edge.set_defaults(handler=run_edge)

    worker = commands.add_parser("worker", help="run an agent worker")
    worker.add_argument("--listen", help="address to listen on (overrides worker.listen)")
    worker.set_defaults(handler=run_worker)

    agent = commands.add_parser(
        "agent", help="run one agent turn through a worker and stream the reply"
    )
    agent.add_argument("--agent", default="main", help="agent id (default: main)")
    agent.add_argument("--message", required=True, help="the user message")
    agent.add_argument("--session-key", help="continue this session (default: a fresh one)")
    agent.add_argument("--worker", help="worker address (default: the first of gateway.workers)")
    agent.set_defaults(handler=run_agent)
    probe = commands.add_parser("probe", help="check a worker's health (exit 0 when serving)")
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

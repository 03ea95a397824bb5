"""Builds and serves the worker: AgentService, grpc.health.v1 and server reflection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent_worker.agent_tools import AgentTools
from agent_worker.agents import AgentRegistry
from agent_worker.cache_trace import CacheTrace
from agent_worker.context_window import ContextWindows, tokenizers_of
from agent_worker.metrics import WorkerMetrics
from agent_worker.providers.base import Provider
from agent_worker.providers.registry import build_provider
from agent_worker.run_delivery import RunDelivery
from agent_worker.runs import Runs
from agent_worker.servicer import AgentServicer
from agent_worker.sessions.factory import store_for_url
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services import tracing
from services.config import ClawgateConfig
from services.grpc_options import worker_server_options
from services.memory import quiet_gc
from services.metrics_http import serve_metrics
from services.network import is_loopback, split_listen
from services.tracing import TracingSetupError, trace_settings

log = logging.getLogger("clawgate.worker")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
FINAL_GRACE_SECONDS = 1.0
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class WorkerStartError(Exception):
    """The worker cannot start as configured; the message names the key to change."""


class SharedSecretInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <secret>` on AgentService calls (health stays open)."""

    def __init__(self, secret: str) -> None:
        self._expected = f"bearer {secret}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_OPEN_METHODS):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).strip().lower().encode()
        if hmac.compare_digest(given, self._expected.lower()):
            return await continuation(details)
        return _deny()


def _deny() -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong worker secret")

    return grpc.unary_unary_rpc_method_handler(deny)


async def report_store_health(
    store: SessionStore, health_servicer: health.aio.HealthServicer, every_seconds: float
) -> None:
    """Keeps the worker's health NOT_SERVING while its session store does not answer."""
    serving = True
    while True:
        await asyncio.sleep(every_seconds)
        reachable = await store.ping()
        if reachable != serving:
            serving = reachable
            log.warning(
                "session store %s", "is reachable again" if reachable else "does not answer"
            )
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if reachable
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await _set_health(health_servicer, status)


def _check_exposure(config: ClawgateConfig, address: str) -> None:
    if (
        not is_loopback(split_listen(address)[0])
        and not config.worker.shared_secret
        and not config.worker.allow_unauthenticated_non_loopback
    ):
        raise WorkerStartError(
            f"worker.listen {address} is not a loopback address and worker.sharedSecret is not"
            " set: anyone who reaches it could read every transcript. Set worker.sharedSecret"
            " (the edge sends it too), or worker.allowUnauthenticatedNonLoopback: true"
        )


def _providers_for(config: ClawgateConfig) -> dict[str, Provider]:
    """Every configured provider: an agent's, or one a turn names (`x-openclaw-model`)."""
    providers: dict[str, Provider] = {}
    profiles = config.auth.profiles
    for name, provider_config in config.models.providers.items():
        try:
            keys = {
                profile: profiles[profile].secret() for profile in config.auth.profiles_of(name)
            }
        except ValueError as error:  # a key file it cannot read
            raise WorkerStartError(f"auth.profiles of provider {name}: {error}") from None
        try:
            providers[name] = build_provider(provider_config, keys)
        except ValueError as error:  # a proxy from the environment it cannot use
            raise WorkerStartError(f"models.providers.{name}: {error}") from None
    return providers


def _grpc_server(
    config: ClawgateConfig, servicer: AgentServicer, address: str
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """AgentService (behind the shared secret when set), health and reflection on `address`."""
    interceptors = (
        [SharedSecretInterceptor(config.worker.shared_secret)]
        if config.worker.shared_secret
        else []
    )
    server = grpc.aio.server(interceptors=interceptors, options=worker_server_options(config))
    pb_grpc.add_AgentServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises instead of returning 0 on some failures
        port = 0
    if port == 0:
        raise WorkerStartError(
            f"worker.listen {address}: cannot listen there (address already in use?)"
        )
    return server, health_servicer


async def _set_health(health_servicer: health.aio.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, status)


async def serve(
    config: ClawgateConfig, listen: str | None = None, metrics_listen: str | None = None
) -> None:
    """Starts providers and the store, serves until SIGTERM/SIGINT, then stops with grace."""
    address = listen or config.worker.listen
    _check_exposure(config, address)
    try:
        traces = trace_settings(config.diagnostics.otel, "clawgate-worker")
    except TracingSetupError as error:
        raise WorkerStartError(str(error)) from None
    agents = AgentRegistry.from_config(config)
    providers = _providers_for(config)
    store = store_for_url(config.sessions.store, config.sessions.pool_size)
    metrics = WorkerMetrics()
    tools = AgentTools(config.mcp, metrics)
    runner = TurnRunner(
        agents,
        providers,
        store,
        max_concurrent_turns=config.worker.max_concurrent_turns,
        max_queued_turns=config.worker.max_queued_turns,
        session_wait_timeout=config.worker.session_wait_timeout_ms / 1000,
        metrics=metrics,
        tools=tools,
        windows=ContextWindows(config.models.providers, tokenizers_of(providers)),
        cache_trace=CacheTrace() if config.diagnostics.cache_trace else None,
        auth_profiles={name: config.auth.profiles_of(name) for name in providers},
    )
    logprob_agents = frozenset(
        agent.id for agent in agents if providers[agent.provider].gives_logprobs
    )
    delivery = RunDelivery(config.hooks.delivery) if config.hooks.delivery else None
    runs = Runs(runner, store, agents, delivery.deliver if delivery else lambda run: None)
    servicer = AgentServicer(
        runner,
        agents,
        store,
        config.sessions.locks_across_processes,
        logprob_agents,
        providers=tuple(providers),
        tools=tools,
        max_turn_messages=config.worker.max_turn_messages,
        runs=runs,
    )
    server, health_servicer = _grpc_server(config, servicer, address)
    metrics_address = metrics_listen or config.worker.metrics_listen
    try:
        stop_metrics = serve_metrics(metrics_address, metrics.registry) if metrics_address else None
    except OSError as error:
        raise WorkerStartError(
            f"worker.metricsListen {metrics_address}: cannot listen there ({error.strerror})"
        ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if traces is not None:
        tracing.start(dataclasses.replace(traces, resource={"clawgate.worker.address": address}))
        log.info("traces go to %s (%s)", traces.endpoint, traces.protocol)
    await store.open()
    for name, provider in providers.items():
        log.info("starting provider %s", name)
        await provider.start()
    await server.start()
    tools.warm_up(agents)
    runs.keep()
    quiet_gc()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    store_watch = asyncio.create_task(
        report_store_health(store, health_servicer, config.worker.store_check_seconds)
    )
    log.info("worker serving on %s (agents: %s)", address, ", ".join(agent.id for agent in agents))
    try:
        await stop.wait()
    finally:
        store_watch.cancel()
        await _stop_serving(server, health_servicer, servicer, config.worker.shutdown_grace_seconds)
        await runs.close()
        if delivery is not None:
            await delivery.close()
        await tools.close()
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        await store.close()
        if stop_metrics is not None:
            stop_metrics()
        tracing.shutdown()
        log.info("worker stopped")


async def _stop_serving(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    servicer: AgentServicer,
    grace: float,
) -> None:
    """Refuses new turns and lets running ones finish within `grace` seconds."""
    log.info("worker stopping (grace %.0fs)", grace)
    await health_servicer.enter_graceful_shutdown()
    servicer.drain()  # turns opened on existing Exchange streams are refused too
    stopping = asyncio.create_task(server.stop(grace))  # refuses new calls from now on
    # Running turns may finish; open health watches would hold the grace period to its end,
    # so once no turn is left the rest get a short grace (a last status still goes out).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(servicer.wait_idle(), grace)
    await server.stop(min(grace, FINAL_GRACE_SECONDS))
    await stopping

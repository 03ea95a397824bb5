from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from agent_worker.server import SERVICE_NAME, report_store_health


class FlakyStore:
    """A store whose database goes away and comes back (its ping is all that is used here)."""

    def __init__(self) -> None:
        self.reachable = True

    async def ping(self) -> bool:
        return self.reachable


async def status(servicer: health.aio.HealthServicer) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), None)
    return int(reply.status)


async def test_health_follows_the_store() -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    store = FlakyStore()
    watcher = asyncio.create_task(report_store_health(store, servicer, 0.01))  # type: ignore[arg-type]
    try:
        store.reachable = False
        await asyncio.sleep(0.05)
        assert await status(servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        store.reachable = True
        await asyncio.sleep(0.05)
        assert await status(servicer) == health_pb2.HealthCheckResponse.SERVING
    finally:
        watcher.cancel()

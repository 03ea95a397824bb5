from __future__ import annotations

import socket

from gateway_edge.placement import candidates, rendezvous_weight
from gateway_edge.worker_pool import PoolSettings, WorkerPool
from gateway_edge.worker_targets import split_target
from services.network import is_static


def test_targets() -> None:
    assert split_target("dns:///agent-worker:50051") == ("agent-worker", 50051)
    assert split_target("[::1]:7") == ("::1", 7)
    assert is_static("10.0.0.1") and is_static("::1") and is_static("localhost")
    assert not is_static("agent-worker")


async def test_names_resolve_to_all_their_addresses() -> None:
    host = socket.gethostname()
    expected = {info[4][0] for info in socket.getaddrinfo(host, 9, type=socket.SOCK_STREAM)}
    pool = WorkerPool([f"dns:///{host}:9", "127.0.0.1:8"], PoolSettings(resolve_seconds=60))
    await pool.open()
    try:
        addresses = {worker.address for worker in pool.workers}
        assert "127.0.0.1:8" in addresses
        assert {a.rsplit(":", 1)[0].strip("[]") for a in addresses - {"127.0.0.1:8"}} == expected
    finally:
        await pool.close()
    assert pool.workers == []


async def test_named_sessions_stick_and_fresh_ones_go_where_there_is_room() -> None:
    pool = WorkerPool(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    await pool.open()
    try:
        workers = pool.workers
        for worker in workers:
            worker.serving = True
        key = "agent:main:openai-user:alice"
        expected = max(workers, key=lambda w: rendezvous_weight(w.address, key))
        assert candidates(workers, key, sticky=True)[0] is expected
        expected.in_flight = 5
        assert candidates(workers, key, sticky=True)[0] is expected  # load does not move a session
        assert candidates(workers, key, sticky=False)[-1] is expected
        expected.serving = False
        assert expected not in candidates(workers, key, sticky=True)
        for worker in workers:
            worker.serving = False
        assert len(candidates(workers, key, sticky=True)) == 3  # none known good: try them all
    finally:
        await pool.close()

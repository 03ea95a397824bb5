"""Model calls priced from the catalog's `cost` (USD per million tokens, OpenClaw's shape) and
counted in the worker's metrics (issue 45)."""

from __future__ import annotations

import pytest

from agent_worker.domain import Usage
from agent_worker.metrics import WorkerMetrics
from agent_worker.usage import UsageMeter, cost_usd
from services.config import parse_config

PRICES = {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}


def test_cost_follows_the_catalog_prices_per_million_tokens() -> None:
    usage = Usage(1_002_500, 10_000, cache_read_tokens=2_000, cache_write_tokens=500)
    # 1,000,000 fresh input at 3, 2,000 cache reads at 0.3, 500 cache writes at 3.75, output.
    assert cost_usd(PRICES, usage) == pytest.approx(3 + 0.0006 + 0.001875 + 0.15)
    assert cost_usd({}, usage) is None  # no price: no cost, not a cost of 0
    # Cached tokens without a price of their own are priced as input.
    assert cost_usd({"input": 1, "output": 2}, Usage(1_000_000, 0, 500_000)) == pytest.approx(1)


def test_the_meter_prices_by_the_model_that_answered_and_counts_by_kind() -> None:
    config = parse_config(
        "{ models: { providers: { p: { api: 'echo', models: ["
        " { id: 'priced', cost: { input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75 } },"
        " { id: 'free' } ] } } }, agents: { list: [ { id: 'main', model: 'p/priced' } ] } }"
    )
    metrics = WorkerMetrics()
    meter = UsageMeter(config.models.providers, metrics)
    priced = meter.record("main", "p", "priced", Usage(1_000, 100, cache_read_tokens=400))
    free = meter.record("main", "p", "free", Usage(1_000, 100))
    assert priced.cost_usd == pytest.approx((600 * 3 + 400 * 0.3 + 100 * 15) / 1e6)
    assert free.cost_usd is None

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    labels = {"agent": "main", "provider": "p", "model": "priced"}
    assert sample("clawgate_worker_model_tokens_total", **labels, kind="input") == 1_000
    assert sample("clawgate_worker_model_tokens_total", **labels, kind="cache_read") == 400
    assert sample("clawgate_worker_model_tokens_total", **labels, kind="output") == 100
    assert sample("clawgate_worker_model_cost_usd_total", **labels) == pytest.approx(
        priced.cost_usd
    )
    free_labels = {**labels, "model": "free"}
    assert sample("clawgate_worker_model_cost_usd_total", **free_labels) == 0

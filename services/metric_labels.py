"""Label children of Prometheus metrics, looked up once per label set.

`metric.labels(...)` validates its arguments and takes a lock on every call (~3 µs here); the
request path asks for the same few children over and over, so each is kept after its first use.
Label values must come from bounded sets (routes, agents, outcomes), as for any metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


def children_of(metric: M) -> Callable[..., M]:
    """A function of label values that returns the same child as `metric.labels(*values)`."""
    found: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
        known = found.get(values)
        if known is None:
            known = found[values] = metric.labels(*values)
        return known

    return child

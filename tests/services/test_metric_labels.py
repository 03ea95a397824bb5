from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from services.metric_labels import children_of


def test_children_are_the_metrics_own_and_counted_in_its_registry() -> None:
    registry = CollectorRegistry()
    turns = Counter("turns", "Turns.", ["agent", "outcome"], registry=registry)
    turns_by = children_of(turns)
    assert turns_by("main", "ok") is turns.labels("main", "ok")
    assert turns_by("main", "ok") is turns_by("main", "ok")
    turns_by("main", "ok").inc()
    turns_by("main", "ok").inc()
    turns_by("main", "cancelled").inc()
    value = registry.get_sample_value
    assert value("turns_total", {"agent": "main", "outcome": "ok"}) == 2
    assert value("turns_total", {"agent": "main", "outcome": "cancelled"}) == 1

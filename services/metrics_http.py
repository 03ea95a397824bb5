"""Serves a Prometheus registry over HTTP on its own "host:port" (prometheus-client's server)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(listen: str, registry: CollectorRegistry) -> Callable[[], None]:
    """Starts serving /metrics in a thread; returns a function that stops it."""
    host, _, port = listen.rpartition(":")
    server, thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return stop

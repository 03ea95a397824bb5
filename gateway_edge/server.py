"""Runs the edge on uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import importlib.util

import uvicorn

from gateway_edge.app import create_app
from services.config import ClawgateConfig
from services.memory import quiet_gc


def serve(config: ClawgateConfig, log_level: str = "info") -> None:
    app = create_app(config)
    quiet_gc()
    uvicorn.run(
        app,
        host=config.gateway.bind,
        port=config.gateway.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=log_level,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=30,
        # The edge reads X-Forwarded-For itself, from gateway.trustedProxies only (proxies.py):
        # trusted-proxy auth needs the peer's own address, which uvicorn would replace.
        proxy_headers=False,
    )

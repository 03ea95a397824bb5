"""Providers behind an egress proxy (issue 17.13): a real forward proxy (proxy.py) on loopback,
an https upstream signed by a test CA (trustme), and the worker configured as users do, with
HTTPS_PROXY / NO_PROXY in its environment or a provider's own `proxy` key."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from devkit.processes import (
    TOKEN,
    Process,
    echo_config,
    free_port,
    start_edge,
    wait_until,
    worker_serving,
    write_config,
)
from devkit.upstream import UpstreamStandIn

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_PROXY_AT_ALL = {name: "" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for index, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=index > 0)
    server.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.fixture(scope="module")
def tls_upstream(tls_files: dict[str, Path]) -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn(tls=(str(tls_files["cert"]), str(tls_files["key"]))) as server:
        yield server


@pytest.fixture(scope="module")
def forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Process]]:
    port = free_port()
    log = tmp_path_factory.mktemp("proxy") / "proxy.log"
    argv = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    process = Process([*argv, "--num-workers", "1", "--num-acceptors", "1"], log).start()
    wait_until(lambda: _accepts(port), 30, "proxy.py", process)
    yield f"http://127.0.0.1:{port}", process
    process.stop()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def ask_through(
    tmp_path: Path, provider: dict[str, Any], env: dict[str, str]
) -> tuple[httpx.Response, str]:
    """One turn on an agent whose provider is `provider`, the worker run with `env`; returns
    the answer and the worker's log."""
    config = echo_config(tmp_path)
    config["models"]["providers"]["behind"] = {"api": "openai-compatible", **provider}
    config["agents"]["list"] = [{"id": "main", "default": True, "model": "behind/m"}]
    path = write_config(tmp_path, config)
    address = config["worker"]["listen"]
    worker = Process(
        [sys.executable, "-m", "clawgate.cli", "--config", str(path), "worker"],
        tmp_path / "worker.log",
        env,
    ).start()
    edge: Process | None = None
    try:
        wait_until(lambda: worker_serving(address), 60, "worker", worker)
        base_url = f"http://127.0.0.1:{config['gateway']['port']}"
        edge = start_edge(path, base_url, tmp_path / "edge.log")
        response = httpx.post(
            f"{base_url}/v1/chat/completions",
            headers=AUTH,
            json={"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    finally:
        if edge is not None:
            edge.stop()
        worker.stop()
    return response, worker.log()


def answer_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_17_13_an_https_provider_through_https_proxy_and_a_test_ca(
    tmp_path: Path,
    tls_files: dict[str, Path],
    tls_upstream: UpstreamStandIn,
    forward_proxy: tuple[str, Process],
) -> None:
    proxy_url, proxy = forward_proxy
    env = {
        **NO_PROXY_AT_ALL,
        "HTTPS_PROXY": proxy_url,
        "https_proxy": proxy_url,  # an empty lowercase one would cancel it
        "NO_PROXY": "",
        "no_proxy": "",
        "SSL_CERT_FILE": str(tls_files["ca"]),
    }
    before = len(tls_upstream.requests)
    response, _ = ask_through(tmp_path, {"baseUrl": tls_upstream.base_url}, env)
    assert answer_text(response) == "one two three"
    assert len(tls_upstream.requests) == before + 1
    wait_until(lambda: f"CONNECT 127.0.0.1:{tls_upstream.port}" in proxy.log(), 5, "proxy log")


def test_17_13_a_providers_own_proxy_key_for_plain_http(
    tmp_path: Path, upstream: UpstreamStandIn, forward_proxy: tuple[str, Process]
) -> None:
    proxy_url, proxy = forward_proxy
    response, _ = ask_through(
        tmp_path, {"baseUrl": upstream.base_url, "proxy": proxy_url}, NO_PROXY_AT_ALL
    )
    assert answer_text(response) == "one two three"
    forwarded = f"127.0.0.1:{upstream.port}"
    wait_until(lambda: forwarded in proxy.log(), 5, "the proxy forwarded the request")


def test_17_13_no_proxy_goes_direct(
    tmp_path: Path, tls_files: dict[str, Path], tls_upstream: UpstreamStandIn
) -> None:
    env = {
        **NO_PROXY_AT_ALL,
        "https_proxy": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        "no_proxy": "localhost,127.0.0.1",
        "SSL_CERT_FILE": str(tls_files["ca"]),
    }
    response, _ = ask_through(tmp_path, {"baseUrl": tls_upstream.base_url}, env)
    assert answer_text(response) == "one two three"


def test_17_13_an_unreachable_proxy_is_named_in_the_workers_log(
    tmp_path: Path, tls_files: dict[str, Path], tls_upstream: UpstreamStandIn
) -> None:
    port = free_port()
    env = {**NO_PROXY_AT_ALL, "https_proxy": f"http://127.0.0.1:{port}", "no_proxy": ""}
    response, log = ask_through(tmp_path, {"baseUrl": tls_upstream.base_url}, env)
    assert response.status_code == 502
    assert f"through the proxy 127.0.0.1:{port}" in log

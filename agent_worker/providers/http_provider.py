"""What the providers reached over HTTP share (`openai-completions`, `anthropic-messages`): one
kept-alive client for their URL, and the one place that maps an exchange's failures to the
worker's errors. Each provider adds its body and its stream parser."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import yarl

from agent_worker.errors import (
    ProviderFailedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from agent_worker.providers.http_client import (
    HttpClient,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
    proxy_for,
)
from agent_worker.providers.upstream_errors import MAX_ERROR_BODY, status_error
from services.provider_config import HttpProviderSection


class HttpProvider:
    supports_images = True
    supports_tools = True

    def __init__(
        self, config: HttpProviderSection, url: yarl.URL | None, headers: dict[str, str]
    ) -> None:
        """`url` None when baseUrl is empty (an unset variable): its turns then fail."""
        self._http: HttpClient | None = None
        if url is not None:
            every = {
                "user-agent": "clawgate",
                "content-type": "application/json",
                "accept": "text/event-stream",
            }
            self._http = HttpClient(
                url,
                {**every, **headers, **config.headers},
                connect_timeout=config.connect_timeout_seconds,
                read_timeout=config.timeout_seconds,
                proxy=proxy_for(url, config.proxy),
            )

    async def start(self) -> None:
        """Connections are made on first use and kept alive."""

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()

    async def exchange(self, body: bytes) -> AsyncGenerator[bytes, None]:
        """The answer's body a network read at a time, once its status said success."""
        if self._http is None:
            raise ProviderUnavailableError(
                "provider unreachable: its baseUrl is empty (an unset environment variable?)"
            )
        answered = False
        try:
            response = await self._http.post(body)
            try:
                if response.status >= 300:
                    error_body = await response.read(MAX_ERROR_BODY)
                    raise status_error(
                        response.status, error_body, response.location, response.retry_after
                    )
                answered = True
                while (block := await response.next_block()) is not None:
                    yield block
            finally:
                response.release()
        except UpstreamTimeout as error:
            raise ProviderTimeoutError(f"provider timed out: {error}") from error
        except UpstreamUnreachable as error:
            # The address stays in the worker's log: API clients learn only what failed.
            raise ProviderUnavailableError(
                "provider unreachable: the agent's model provider could not be reached",
                detail=f"provider unreachable: {error}",
            ) from error
        except UpstreamBroken as error:
            what = "broke off its answer" if answered else "failed"
            raise ProviderFailedError(f"provider {what}: {error}") from error

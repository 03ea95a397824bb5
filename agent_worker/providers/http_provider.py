"""What the providers reached over HTTP share (`openai-completions`, `anthropic-messages`): one
kept-alive client for their URL, and the one place that maps an exchange's failures to the
worker's errors. Each provider adds its body and its stream parser."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import yarl

from agent_worker.errors import (
    ProviderFailedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from agent_worker.light_prompts import is_light
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.http_client import (
    HttpClient,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
    proxy_for,
)
from agent_worker.providers.upstream_errors import MAX_ERROR_BODY, status_error
from services import tracing
from services.off_loop import OffLoop
from services.provider_config import HttpProviderSection

MAX_SSE_LINE = 8 << 20


def sse_data(data: bytes) -> tuple[list[bytes], bytes]:
    """The `data:` payloads of an SSE stream's complete lines in `data`, and the incomplete
    last line (to be read again with the next bytes)."""
    lines = data.split(b"\n")
    rest = lines.pop()
    if len(rest) > MAX_SSE_LINE:
        raise ProviderFailedError("provider sent an SSE line over 8 MiB")
    return [line[5:] for line in lines if line.startswith(b"data:")], rest


class HttpProvider:
    supports_images = True
    supports_tools = True

    def __init__(
        self, config: HttpProviderSection, url: yarl.URL | None, headers: dict[str, str]
    ) -> None:
        """`url` None when baseUrl is empty (an unset variable): its turns then fail."""
        self._config = config
        self._headers = {"user-agent": "clawgate", **headers, **config.headers}
        self._http = self.client(url, "text/event-stream")
        self._encoding = OffLoop(threads=1, name="request-body")

    async def encoded(
        self, request: ProviderRequest, encode: Callable[[ProviderRequest], bytes]
    ) -> bytes:
        """The request's body; a large prompt's is built and serialised on a thread of its
        own, not on the event loop that carries every other turn."""
        return await self._encoding.run(is_light(request.messages), encode, request)

    def client(self, url: yarl.URL | None, accept: str) -> HttpClient | None:
        """A kept-alive client for one of the provider's URLs (None for no URL)."""
        if url is None:
            return None
        config = self._config
        return HttpClient(
            url,
            {"content-type": "application/json", "accept": accept, **self._headers},
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.timeout_seconds,
            proxy=proxy_for(url, config.proxy),
        )

    async def start(self) -> None:
        """Connections are made on first use and kept alive."""

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._encoding.close()

    async def whole(self, body: bytes, http: HttpClient | None) -> bytes:
        """A whole (JSON) answer, for the calls that do not stream."""
        async with aclosing(self.exchange(body, http)) as blocks:
            return b"".join([block async for block in blocks])

    async def exchange(
        self, body: bytes, http: HttpClient | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The answer's body a network read at a time, once its status said success (from the
        provider's main URL, or `http`'s)."""
        http = http or self._http
        if http is None:
            raise ProviderUnavailableError(
                "provider unreachable: its baseUrl is empty (an unset environment variable?)"
            )
        answered = False
        try:
            response = await http.post(body, tracing.traceparent_header())
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

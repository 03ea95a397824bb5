"""What the providers reached over HTTP share (`openai-completions`, `anthropic-messages`): one
kept-alive client for their URL, and the one place that maps an exchange's failures to the
worker's errors. Each provider adds its body and its stream parser."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any

import orjson
import yarl

from agent_worker.errors import (
    ProviderFailedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    TurnError,
)
from agent_worker.events import ReasoningDelta, TextDelta, ToolCallDelta, TurnFinished
from agent_worker.light_prompts import is_light
from agent_worker.providers.base import ProviderEvent, ProviderRequest
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
NO_PROFILES: Mapping[str, str] = MappingProxyType({})  # a provider that uses its own apiKey
# What one read of a stream gives the turn.
Piece = TextDelta | ReasoningDelta | ToolCallDelta


class MidAnswerError(Exception):
    """An error event mid-stream: the events before it in the same read still go out first."""

    def __init__(self, before: list[Piece], error: TurnError) -> None:
        self.before = before
        self.error = error


class EventStream:
    """An SSE stream of JSON events (Anthropic's Messages, OpenAI's Responses), parsed a
    network read at a time: every complete event of a read in one JSON parse, handed to
    `handle`; `finished` is the answer's end once `done`."""

    done = False  # the stream's last event arrived

    def __init__(self) -> None:
        self.events = 0  # events read (an answer without any is not this API's stream)
        self._pending = b""

    def feed(self, block: bytes) -> list[Piece]:
        payloads, self._pending = sse_data(self._pending + block if self._pending else block)
        if not payloads:
            return []
        try:
            events = orjson.loads(b"[%s]" % b",".join(payloads))
        except orjson.JSONDecodeError as error:
            raise ProviderFailedError(f"provider sent malformed JSON: {error}") from None
        self.events += len(events)
        try:
            return self.handle(events)
        except (AttributeError, LookupError, TypeError, ValueError) as error:
            raise ProviderFailedError(f"provider sent a malformed event: {error!r}") from None

    def handle(self, events: list[Any]) -> list[Piece]:
        """The pieces of one read's events; raises MidAnswerError for an error event."""
        raise NotImplementedError

    def finished(self) -> TurnFinished:
        raise NotImplementedError


def flush_texts(texts: list[str]) -> list[TextDelta]:
    """The text pieces of one read as one delta (none when there are none); empties `texts`."""
    if not texts:
        return []
    text = "".join(texts)
    texts.clear()
    return [TextDelta(text)]


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
        self,
        config: HttpProviderSection,
        url: yarl.URL | None,
        headers: dict[str, str],
        profile_keys: Mapping[str, str],
    ) -> None:
        """`url` None when baseUrl is empty (an unset variable): its turns then fail.
        `profile_keys`: the key of each auth profile (by id, in order), used instead of the
        provider's own apiKey; a request names its profile (`ProviderRequest.auth_profile`)."""
        self._config = config
        # Each profile's key as a ready header line, sent with that profile's requests alone.
        self._key_heads = {
            profile: "{}: {}\r\n".format(*self.key_header(key)).encode()
            for profile, key in profile_keys.items()
        }
        # Calls that name no profile (embeddings) use the first.
        self._default_key_head = next(iter(self._key_heads.values()), b"")
        if config.api_key and not profile_keys:
            name, value = self.key_header(config.api_key)
            headers = {**headers, name: value}
        self._headers = {"user-agent": "clawgate", **headers, **config.headers}
        self._http = self.client(url, "text/event-stream")
        self._encoding = OffLoop(threads=1, name="request-body")

    @staticmethod
    def key_header(key: str) -> tuple[str, str]:
        """The header that carries an API key (OpenAI's bearer token; Anthropic overrides)."""
        return "authorization", f"Bearer {key}"

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

    async def answer(
        self,
        request: ProviderRequest,
        encode: Callable[[ProviderRequest], bytes],
        parsed: EventStream,
        last_event: str,
        api: str,
    ) -> AsyncGenerator[ProviderEvent, None]:
        """The streamed answer to `request` as `parsed` reads it, then its finish; an answer
        that ends before `last_event` is a failure (`api`: what baseUrl should point at)."""
        body = await self.encoded(request, encode)
        async with aclosing(self.exchange(body, profile=request.auth_profile)) as blocks:
            async for block in blocks:
                try:
                    events = parsed.feed(block)
                except MidAnswerError as failure:
                    for event in failure.before:
                        yield event
                    raise failure.error from None
                for event in events:
                    yield event
                if parsed.done:
                    break
        if not parsed.done:
            raise ProviderFailedError(
                f"provider's answer ended before {last_event}: is baseUrl {api}?"
                if not parsed.events
                else f"provider broke off its answer before {last_event}"
            )
        yield parsed.finished()

    async def whole(self, body: bytes, http: HttpClient | None) -> bytes:
        """A whole (JSON) answer, for the calls that do not stream."""
        async with aclosing(self.exchange(body, http)) as blocks:
            return b"".join([block async for block in blocks])

    async def exchange(
        self, body: bytes, http: HttpClient | None = None, profile: str = ""
    ) -> AsyncGenerator[bytes, None]:
        """The answer's body a network read at a time, once its status said success (from the
        provider's main URL, or `http`'s), sent with `profile`'s key when it has profiles."""
        http = http or self._http
        if http is None:
            raise ProviderUnavailableError(
                "provider unreachable: its baseUrl is empty (an unset environment variable?)"
            )
        answered = False
        try:
            key_head = self._key_heads.get(profile, self._default_key_head)
            response = await http.post(body, key_head + tracing.traceparent_header())
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

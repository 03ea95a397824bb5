from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from agent_worker.domain import ChatMessage, FinishReason, Image, Sampling, Tool, Usage
from agent_worker.errors import (
    ProviderAuthError,
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    TurnError,
)
from agent_worker.events import TextDelta, TurnFinished
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.openai_compatible import (
    MAX_DELTA_CHARS,
    OpenAICompatibleProvider,
    SseBody,
)
from devkit.processes import free_port
from devkit.upstream import CACHED_TOKENS, UpstreamStandIn
from services.provider_config import OpenAICompatibleProviderConfig


def provider(base_url: str, **settings: object) -> OpenAICompatibleProvider:
    config = {"api": "openai-compatible", "baseUrl": base_url, "apiKey": "k", **settings}
    return OpenAICompatibleProvider(OpenAICompatibleProviderConfig.model_validate(config))


def request(model: str, **sampling: object) -> ProviderRequest:
    return ProviderRequest(model, (ChatMessage("user", "hi"),), Sampling(**sampling))  # type: ignore[arg-type]


async def test_streams_deltas_and_passes_usage_and_sampling(upstream: UpstreamStandIn) -> None:
    client = provider(upstream.base_url)
    events = [e async for e in client.stream(request("m", temperature=0.2, stop=("x",), seed=4))]
    await client.close()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    assert finished.finish_reason is FinishReason.LENGTH
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (11, 3)
    assert finished.usage.cache_read_tokens == CACHED_TOKENS  # prompt_tokens_details
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert (sent["temperature"], sent["stop"], sent["seed"]) == (0.2, ["x"], 4)
    assert "top_p" not in sent


async def test_sse_lines_cut_across_network_reads_are_joined(upstream: UpstreamStandIn) -> None:
    client = provider(upstream.base_url)
    events = [e async for e in client.stream(request("split"))]
    await client.close()
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["one ", "two ", "three"]
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.usage.completion_tokens == 3


def sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks)


def fed(body: SseBody, block: bytes) -> list[str]:
    return [delta.text for delta in body.feed(block) if isinstance(delta, TextDelta)]


def content(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def test_chunks_that_arrive_together_go_on_as_one_delta() -> None:
    body = SseBody()
    assert fed(body, sse(content("a"), content("b"), content("c"))) == ["abc"]
    assert fed(body, sse(content("d"))) == ["d"]  # a later read is a later delta
    assert body.deltas == 4 and not body.done
    body.feed(b"data: [DONE]\n\n")
    assert body.done


def test_a_joined_delta_stays_under_its_size_cap() -> None:
    body = SseBody()
    piece = "x" * 1000
    texts = fed(body, sse(*[content(piece)] * 40))
    assert "".join(texts) == piece * 40
    assert len(texts) > 1 and all(len(text) < MAX_DELTA_CHARS + len(piece) for text in texts)


def test_text_before_an_error_event_is_kept() -> None:
    body = SseBody()
    assert fed(body, sse(content("partial"), {"error": {"message": "boom"}})) == ["partial"]
    assert body.failure is not None and "boom" in body.failure.message


def outcome(*reads: bytes) -> tuple[list[str], bool, Usage | None, FinishReason, int]:
    body = SseBody()
    texts = [text for read in reads for text in fed(body, read)]
    return texts, body.done, body.usage, body.finish_reason, body.deltas


ANSWER = sse(
    content("a"),
    content('b\n"c"'),  # JSON escapes the line break: no raw one in the event
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
)


@pytest.mark.parametrize(
    "other_shape",
    [
        ANSWER.replace(b"\n\n", b"\r\n\r\n"),  # CRLF line ends
        ANSWER.replace(b"data: ", b"data:"),  # no space after the colon
        b": keep-alive\n\n" + ANSWER,  # a comment line
        ANSWER.replace(b"\n\n", b"\nevent: chunk\n\n"),  # another field
    ],
)
@pytest.mark.parametrize("done", [b"data: [DONE]\n\n", b""])
def test_every_sse_shape_reads_as_the_plain_one(other_shape: bytes, done: bytes) -> None:
    expected = outcome(ANSWER + done)
    assert expected == (['ab\n"c"'], bool(done), Usage(2, 3), FinishReason.LENGTH, 2)
    assert outcome(other_shape + done) == expected
    split = len(ANSWER) // 2  # a read that ends mid-line, then the rest
    assert outcome(ANSWER[:split], ANSWER[split:] + done)[1:] == expected[1:]


def test_only_done_or_a_late_chunk_after_it() -> None:
    assert outcome(b"data: [DONE]\n\n") == ([], True, None, FinishReason.STOP, 0)
    late = b"data: [DONE]\n\n" + sse(content("late"))
    assert outcome(late) == ([], True, None, FinishReason.STOP, 0)


@pytest.mark.parametrize(
    "chunk",
    [
        b"5",
        b'"text"',
        b"[1]",
        b'{"choices": {"a": 1}}',
        b'{"choices": [{"delta": "x"}]}',
        b'{"choices": [{"delta": {"content": "a"}, "finish_reason": ["x"]}]}',
        b'{"usage": 3}',
        b'{"error": "plain"}',
    ],
)
def test_a_malformed_chunk_fails_the_answer_clearly(chunk: bytes) -> None:
    with pytest.raises(ProviderFailedError, match="malformed chunk"):
        SseBody().feed(b"data: " + chunk + b"\n\n")


def test_done_ends_the_answer_even_with_that_text_in_a_chunk() -> None:
    body = SseBody()
    texts = fed(body, sse(content("say [DONE]")) + b"data: [DONE]\n\n" + sse(content("late")))
    assert texts == ["say [DONE]"] and body.done


async def test_images_are_sent_as_data_uris(upstream: UpstreamStandIn) -> None:
    client = provider(upstream.base_url)
    message = ChatMessage("user", "look", (Image("image/png", b"\x89PNG"),))
    [e async for e in client.stream(ProviderRequest("m", (message,), Sampling()))]
    await client.close()
    content = upstream.requests[-1]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "look"}
    assert content[1]["image_url"]["url"] == "data:image/png;base64,iVBORw=="


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("status-429", ProviderRateLimitedError),
        ("status-400", ProviderRejectedError),
        ("status-404", ProviderRejectedError),
        ("status-401", ProviderAuthError),
        ("status-403", ProviderAuthError),
        ("status-500", ProviderOverloadedError),
        ("status-503", ProviderOverloadedError),
        ("break-after-1", ProviderFailedError),
    ],
)
async def test_upstream_errors_map_to_turn_errors(
    upstream: UpstreamStandIn, model: str, error: type[TurnError]
) -> None:
    client = provider(upstream.base_url)
    with pytest.raises(error) as caught:
        [e async for e in client.stream(request(model))]
    await client.close()
    assert type(caught.value) is error and caught.value.message
    # Worth asking again: unreachable, rate-limited or overloaded; never a rejected request.
    assert caught.value.transient == (error in (ProviderRateLimitedError, ProviderOverloadedError))
    # Another key (or the next model) may do: never the same key again.
    assert caught.value.key_refused == (error is ProviderAuthError)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("redirect", "redirected (308) to https://elsewhere.example/v1/chat/completions"),
        ("not-sse", "held no SSE events"),
    ],
)
async def test_a_redirect_or_an_answer_that_is_not_sse_fails_clearly(
    upstream: UpstreamStandIn, model: str, message: str
) -> None:
    client = provider(upstream.base_url)
    with pytest.raises(ProviderFailedError, match=re.escape(message)):
        [e async for e in client.stream(request(model))]
    await client.close()


async def test_unreachable_upstream_is_unavailable() -> None:
    client = provider(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ProviderUnavailableError, match="unreachable"):
        [e async for e in client.stream(request("m"))]
    await client.close()


async def test_an_upstream_silent_past_its_timeout_times_out(upstream: UpstreamStandIn) -> None:
    client = provider(upstream.base_url, timeoutSeconds=0.2)
    with pytest.raises(ProviderTimeoutError, match="no answer for 0.2s"):
        [e async for e in client.stream(request("slow-600"))]
    await client.close()


async def test_an_empty_base_url_fails_each_turn_clearly() -> None:
    client = provider("")  # "${OPENAI_BASE_URL}" with the variable unset
    with pytest.raises(ProviderUnavailableError, match="baseUrl is empty"):
        [e async for e in client.stream(request("m"))]
    await client.close()


def test_logprobs_of_joined_chunks_stay_with_their_text() -> None:
    def scored(text: str, logprob: float) -> dict[str, object]:
        entry = {
            "token": text,
            "logprob": logprob,
            "bytes": list(text.encode()),
            "top_logprobs": [{"token": text, "logprob": logprob, "bytes": None}],
        }
        chunk = content(text)
        chunk["choices"][0]["logprobs"] = {"content": [entry]}  # type: ignore[index]
        return chunk

    (delta,) = SseBody().feed(sse(scored("a", -0.5), scored("b", -1.25)))
    assert isinstance(delta, TextDelta)
    assert delta.text == "ab"
    assert [(lp.token, lp.logprob, lp.token_bytes) for lp in delta.logprobs] == [
        ("a", -0.5, b"a"),
        ("b", -1.25, b"b"),
    ]
    assert delta.logprobs[1].top_logprobs[0].token == "b"


def cached(retention: str | None, key: str = "clawgate-0123") -> ProviderRequest:
    return ProviderRequest(
        "m", (ChatMessage("user", "hi"),), Sampling(), cache_retention=retention, cache_key=key
    )


def sent(client: OpenAICompatibleProvider, request: ProviderRequest) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(client._body(request))
    return body


@pytest.mark.parametrize("retention", [None, "short"])
def test_openais_own_host_gets_the_sessions_cache_key(retention: str | None) -> None:
    body = sent(provider("https://api.openai.com/v1"), cached(retention))
    assert body["prompt_cache_key"] == "clawgate-0123" and "prompt_cache_retention" not in body


def test_long_retention_is_24_hours_where_the_upstream_takes_it() -> None:
    assert (
        sent(provider("https://api.openai.com/v1"), cached("long"))["prompt_cache_retention"]
        == "24h"
    )
    opted = provider(
        "http://127.0.0.1:9/v1",
        models=[{"id": "m", "compat": {"supportsPromptCacheKey": True}}],
    )
    body = sent(opted, cached("long"))
    assert body["prompt_cache_key"] == "clawgate-0123" and "prompt_cache_retention" not in body


def test_no_cache_key_unless_the_upstream_opts_in_or_caching_is_off() -> None:
    assert "prompt_cache_key" not in sent(provider("http://127.0.0.1:9/v1"), cached("short"))
    official = provider("https://api.openai.com/v1")
    assert "prompt_cache_key" not in sent(official, cached("none"))
    assert "prompt_cache_key" not in sent(official, cached("short", key=""))  # a summary
    declined = provider(
        "https://api.openai.com/v1",
        models=[{"id": "m", "compat": {"supportsPromptCacheKey": False}}],
    )
    assert "prompt_cache_key" not in sent(declined, cached("short"))


def routed(retention: str | None, **compat: object) -> dict[str, Any]:
    """The body for a route that takes Anthropic's markers in chat messages."""
    client = provider(
        "http://127.0.0.1:9/v1",
        models=[{"id": "m", "compat": {"cacheControlFormat": "anthropic", **compat}}],
    )
    messages = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "first"),
        ChatMessage("assistant", "one"),
        ChatMessage("user", "second"),
    )
    tools = (Tool("time__now", "The time.", '{"type": "object"}'),)
    request = ProviderRequest(
        "m", messages, Sampling(), tools, cache_retention=retention, cache_key="clawgate-1"
    )
    body: dict[str, Any] = orjson.loads(client._body(request))
    return body


def test_anthropic_markers_in_chat_messages_where_the_route_takes_them() -> None:
    body = routed("short")
    ephemeral = {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == ephemeral
    system, first, _, latest = body["messages"]
    assert system["content"] == [{"type": "text", "text": "Be brief.", "cache_control": ephemeral}]
    assert first["content"] == "first"  # only the latest input is marked
    assert latest["content"][-1]["cache_control"] == ephemeral
    assert "prompt_cache_key" not in body  # the route did not say it takes one


def test_anthropic_markers_follow_retention_and_string_only_routes() -> None:
    assert "cache_control" not in str(routed("none"))
    assert routed("long")["tools"][-1]["cache_control"] == {"type": "ephemeral"}  # no 1h said
    long = routed("long", supportsLongCacheRetention=True)
    assert long["messages"][-1]["content"][-1]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    strings = routed("short", requiresStringContent=True)
    assert all(isinstance(m["content"], str) for m in strings["messages"])
    assert strings["tools"][-1]["cache_control"] == {"type": "ephemeral"}

"""Traces across the two processes (issue 35): a real edge and worker export OTLP to a receiver
started here, which decodes what they send; clients are the openai SDK and plain HTTP, the model
is the OpenAI-compatible stand-in (which records the traceparent it is sent), the tool server is
mcp-server-time."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, Stack, echo_config, start_stack
from devkit.upstream import UpstreamStandIn
from tests.support.otlp import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan

RUN_TURN = "clawgate.agent.v1.AgentService/RunTurn"
# The exporters send every 100 ms instead of every 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
SECRET_WORDS = "my passport number is 12345"


def traceparent() -> tuple[str, str, str]:
    """A client's span: (trace id, span id, the header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def tracing_config(tmp_path: Path, upstream: UpstreamStandIn, endpoint: str) -> dict:
    config = echo_config(tmp_path, upstream.base_url)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["diagnostics"] = {"otel": {"endpoint": endpoint}}
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    config["agents"]["list"].append({"id": "tooled", "tools": {"allow": ["time__*"]}})
    return config


@contextmanager
def stack_with(
    tmp_path: Path, upstream: UpstreamStandIn, endpoint: str, **otel: object
) -> Iterator[Stack]:
    """A stack of its own, with more `diagnostics.otel` keys."""
    config = tracing_config(tmp_path, upstream, endpoint)
    config["diagnostics"]["otel"].update(otel)
    running = start_stack(tmp_path, config, FAST_EXPORT)
    try:
        yield running
    finally:
        running.stop()


def post_chat(
    stack: Stack, agent: str, content: str = "hi", traceparent: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    body = {"model": f"openclaw:{agent}", "messages": [{"role": "user", "content": content}]}
    return httpx.post(
        f"{stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: UpstreamStandIn,
    receiver: OtlpHttpReceiver,
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("tracing")
    config = tracing_config(tmp_path, upstream, receiver.endpoint)
    running = start_stack(tmp_path, config, FAST_EXPORT)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def turn_complete(edge_route: str) -> Callable[[list[ReceivedSpan]], bool]:
    """Whether a turn's trace has come whole: the edge's request span ends last."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {span.name for span in spans}
        return {f"POST {edge_route}", RUN_TURN, "session write"} <= names

    return complete


def assert_one_turn(spans: list[ReceivedSpan], client_span: str | None, route: str) -> ReceivedSpan:
    """The shape every traced turn has; returns the edge's request span (the root)."""
    assert {span.service for span in spans} == {"clawgate-edge", "clawgate-worker"}, spans
    assert len({span.trace_id for span in spans}) == 1
    ids = {span.span_id for span in spans}
    assert len(ids) == len(spans)
    [root] = named(spans, f"POST {route}")
    assert root.kind == "server" and root.service == "clawgate-edge"
    assert root.parent_id == (client_span or "")  # it continues the client's span, or starts
    assert root.attributes["http.response.status_code"] == 200
    for span in spans:
        if span is not root:
            assert span.parent_id in ids, f"{span.name}'s parent is not in the trace"
    # The gRPC call: the edge's client span is the worker's turn span's parent.
    [call] = [span for span in named(spans, RUN_TURN) if span.kind == "client"]
    [served] = [span for span in named(spans, RUN_TURN) if span.kind == "server"]
    assert call.service == "clawgate-edge" and served.service == "clawgate-worker"
    assert served.parent_id == call.span_id
    assert call.attributes["rpc.system"] == "grpc"
    assert served.resource["clawgate.worker.address"]
    assert call.attributes["clawgate.session.sticky"] in (True, False)
    assert served.attributes["clawgate.session.queued"] is False
    assert served.attributes["clawgate.session.wait_seconds"] >= 0
    assert named(spans, "session write")[0].service == "clawgate-worker"
    # What is said as an attribute costs no span of its own.
    assert not named(spans, "placement") and not named(spans, "session wait")
    models = [span for span in spans if span.name.startswith("chat ")]
    assert models and all(span.kind == "client" for span in models)
    assert len([span for span in spans if span.kind == "client"]) >= 2
    assert not any(span.error for span in spans), [s for s in spans if s.error]
    return root


def assert_model_span(spans: list[ReceivedSpan], upstream: UpstreamStandIn) -> None:
    """The model call follows the GenAI conventions, and the upstream got its context."""
    [model] = named(spans, "chat m")
    assert model.attributes["gen_ai.operation.name"] == "chat"
    assert model.attributes["gen_ai.provider.name"] == "upstream"
    assert model.attributes["gen_ai.request.model"] == "m"
    [finish_reason] = model.attributes["gen_ai.response.finish_reasons"]
    assert finish_reason in ("stop", "length")  # the stand-in's answers end either way
    assert model.attributes["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.usage.input_tokens" in model.attributes
    sent = [
        headers[b"traceparent"].decode()
        for headers in upstream.request_headers
        if model.trace_id in headers.get(b"traceparent", b"").decode()
    ]
    assert sent == [f"00-{model.trace_id}-{model.span_id}-01"]


def assert_no_content(spans: list[ReceivedSpan]) -> None:
    for span in spans:
        for value in span.attributes.values():
            assert SECRET_WORDS not in str(value), f"{span.name} recorded the message"


def test_a_chat_turn_with_a_traceparent_is_one_trace_across_both_services(
    client: openai.OpenAI, receiver: OtlpHttpReceiver, upstream: UpstreamStandIn, stack: Stack
) -> None:
    trace_id, span_id, header = traceparent()
    raw = client.chat.completions.with_raw_response.create(
        model="openclaw:vision",
        messages=[{"role": "user", "content": SECRET_WORDS}],
        user="traced-alice",  # a conversation: its history is read
        extra_headers={"traceparent": header},
    )
    assert raw.parse().choices[0].message.content
    response_trace = raw.headers["traceresponse"]
    assert response_trace.startswith(f"00-{trace_id}-")
    spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/chat/completions"))
    root = assert_one_turn(spans, span_id, "/v1/chat/completions")
    assert response_trace == f"00-{trace_id}-{root.span_id}-01"
    assert root.attributes["clawgate.agent.id"] == "vision"
    [read] = named(spans, "session read")
    assert read.attributes["db.system.name"] == "sqlite"
    assert_model_span(spans, upstream)
    assert_no_content(spans)
    # The log lines of the request carry its trace.
    time.sleep(0.5)  # lines are written in batches
    assert f"trace_id={trace_id}" in stack.edge.log()
    assert f"trace_id={trace_id}" in stack.worker.log()


def test_a_stream_is_the_same_shape(
    client: openai.OpenAI, receiver: OtlpHttpReceiver, upstream: UpstreamStandIn
) -> None:
    trace_id, span_id, header = traceparent()
    stream = client.chat.completions.create(
        model="openclaw:vision",
        messages=[{"role": "user", "content": SECRET_WORDS}],
        stream=True,
        extra_headers={"traceparent": header},
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/chat/completions"))
    assert_one_turn(spans, span_id, "/v1/chat/completions")
    assert_model_span(spans, upstream)
    assert_no_content(spans)


def test_a_responses_request_is_the_same_shape(
    client: openai.OpenAI, receiver: OtlpHttpReceiver, upstream: UpstreamStandIn
) -> None:
    trace_id, span_id, header = traceparent()
    response = client.responses.create(
        model="openclaw:vision", input=SECRET_WORDS, extra_headers={"traceparent": header}
    )
    assert response.output_text
    spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/responses"))
    assert_one_turn(spans, span_id, "/v1/responses")
    assert_model_span(spans, upstream)


def test_an_mcp_tool_call_is_a_span_in_the_turn(
    client: openai.OpenAI, receiver: OtlpHttpReceiver
) -> None:
    trace_id, span_id, header = traceparent()
    answer = client.chat.completions.create(
        model="openclaw:tooled",
        messages=[{"role": "user", "content": 'call time__get_current_time {"timezone": "UTC"}'}],
        extra_headers={"traceparent": header},
    )
    assert "time__get_current_time said" in (answer.choices[0].message.content or "")
    spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/chat/completions"))
    assert_one_turn(spans, span_id, "/v1/chat/completions")
    [tool] = named(spans, "execute_tool time__get_current_time")
    assert tool.service == "clawgate-worker"
    assert tool.attributes["gen_ai.tool.name"] == "time__get_current_time"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert "gen_ai.tool.call.arguments" not in tool.attributes  # content stays out
    [served] = [span for span in named(spans, RUN_TURN) if span.kind == "server"]
    assert tool.parent_id == served.span_id
    assert len(named(spans, "chat echo-1")) == 2  # the call, then the answer with its result


def test_compaction_and_a_tool_invoked_over_http_are_traced_in_the_worker(
    stack: Stack, receiver: OtlpHttpReceiver
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "x-openclaw-session-key": "traced-compact"}
    for number in range(3):
        body = {"model": "openclaw:main", "messages": [{"role": "user", "content": f"t{number}"}]}
        answered = httpx.post(
            f"{stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        assert answered.status_code == 200
    trace_id, span_id, header = traceparent()
    compacted = httpx.post(
        f"{stack.base_url}/v1/sessions/traced-compact/compact",
        headers={**headers, "traceparent": header},
        timeout=30,
    )
    assert compacted.status_code == 200, compacted.text
    compact_call = "clawgate.agent.v1.AgentService/CompactSession"
    spans = receiver.wait_for_trace(
        trace_id,
        lambda spans: len(named(spans, compact_call)) == 2 and bool(named(spans, "compaction")),
    )
    [compaction] = named(spans, "compaction")
    assert compaction.service == "clawgate-worker"
    assert compaction.attributes["clawgate.compaction.trigger"] == "manual"
    [summary] = named(spans, "chat echo-1")  # the summary is a model call inside it
    assert summary.parent_id == compaction.span_id
    compact_calls = named(spans, compact_call)
    [served] = [span for span in compact_calls if span.kind == "server"]
    [call] = [span for span in compact_calls if span.kind == "client"]
    assert compaction.parent_id == served.span_id and served.parent_id == call.span_id

    trace_id, span_id, header = traceparent()
    invoked = httpx.post(
        f"{stack.base_url}/tools/invoke",
        json={"tool": "time__get_current_time", "args": {"timezone": "UTC"}, "agentId": "tooled"},
        headers={"Authorization": f"Bearer {TOKEN}", "traceparent": header},
        timeout=30,
    )
    assert invoked.status_code == 200 and invoked.json()["ok"], invoked.text
    spans = receiver.wait_for_trace(
        trace_id,
        lambda spans: (
            {"POST /tools/invoke", "execute_tool time__get_current_time"}
            <= {span.name for span in spans}
        ),
    )
    [tool] = named(spans, "execute_tool time__get_current_time")
    invoke_calls = named(spans, "clawgate.agent.v1.AgentService/InvokeTool")
    [served] = [span for span in invoke_calls if span.kind == "server"]
    [call] = [span for span in invoke_calls if span.kind == "client"]
    assert tool.parent_id == served.span_id and served.parent_id == call.span_id
    assert named(spans, "POST /tools/invoke")[0].parent_id == span_id


def test_a_grpc_client_s_metadata_traceparent_is_followed(
    stack: Stack, receiver: OtlpHttpReceiver
) -> None:
    trace_id, span_id, header = traceparent()
    request = pb.RunTurnRequest(
        agent_id="main", session_key="traced-grpc", input=pb.Message(role=pb.ROLE_USER, text="hi")
    )
    with grpc.insecure_channel(stack.worker_address) as channel:
        replies = pb_grpc.AgentServiceStub(channel).RunTurn(
            request, metadata=(("traceparent", header),), timeout=30
        )
        assert [event for reply in replies for event in reply.events]
    spans = receiver.wait_for_trace(trace_id, lambda spans: bool(named(spans, RUN_TURN)))
    [served] = named(spans, RUN_TURN)
    assert served.parent_id == span_id and served.service == "clawgate-worker"


def test_a_refused_request_is_traced_with_its_error(
    stack: Stack, receiver: OtlpHttpReceiver
) -> None:
    trace_id, span_id, header = traceparent()
    response = post_chat(stack, "nobody", traceparent=header)
    assert response.status_code in (400, 404), response.text
    assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")
    spans = receiver.wait_for_trace(trace_id, lambda spans: bool(spans))
    [root] = spans
    assert root.parent_id == span_id and root.service == "clawgate-edge"
    assert root.error
    assert "nobody" in root.status_message  # the error the client got, said in the trace
    assert root.attributes["http.response.status_code"] == response.status_code


@pytest.mark.parametrize("header", [None, "00-nonsense-01"], ids=["none", "garbled"])
def test_a_request_without_a_usable_traceparent_starts_a_new_trace(
    stack: Stack, receiver: OtlpHttpReceiver, header: str | None
) -> None:
    response = post_chat(stack, "main", traceparent=header)
    assert response.status_code == 200
    trace_id = response.headers["traceresponse"].split("-")[1]
    spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/chat/completions"))
    assert_one_turn(spans, None, "/v1/chat/completions")
    assert named(spans, "chat echo-1")[0].attributes["gen_ai.provider.name"] == "echo"


def test_probes_are_not_traced(stack: Stack, receiver: OtlpHttpReceiver) -> None:
    response = httpx.get(f"{stack.base_url}/readyz", timeout=10)
    assert "traceresponse" not in response.headers
    assert receiver.refused == 0  # and every export so far was one a collector takes


def test_the_otlp_grpc_protocol(tmp_path: Path, upstream: UpstreamStandIn) -> None:
    with OtlpGrpcReceiver() as receiver:
        with stack_with(tmp_path, upstream, receiver.endpoint, protocol="grpc") as running:
            trace_id, span_id, header = traceparent()
            assert post_chat(running, "vision", traceparent=header).status_code == 200
            spans = receiver.wait_for_trace(trace_id, turn_complete("/v1/chat/completions"))
            assert_one_turn(spans, span_id, "/v1/chat/completions")


def test_capture_content_records_the_messages(
    tmp_path: Path, upstream: UpstreamStandIn, receiver: OtlpHttpReceiver
) -> None:
    otel = {"captureContent": True, "serviceName": "gateway-under-test"}
    with stack_with(tmp_path, upstream, receiver.endpoint, **otel) as running:
        trace_id, _, header = traceparent()
        assert post_chat(running, "vision", SECRET_WORDS, header).status_code == 200
        spans = receiver.wait_for_trace(trace_id, lambda s: bool(named(s, "chat m")))
        [model] = named(spans, "chat m")
        assert SECRET_WORDS in model.attributes["gen_ai.input.messages"]
        assert model.attributes["gen_ai.output.messages"]
        assert model.service == "gateway-under-test"


def test_a_trace_not_sampled_records_nothing_and_its_context_still_travels(
    tmp_path: Path, upstream: UpstreamStandIn, receiver: OtlpHttpReceiver
) -> None:
    with stack_with(tmp_path, upstream, receiver.endpoint, sampleRate=0) as running:
        fresh = post_chat(running, "vision")
        assert fresh.status_code == 200
        trace_id, _, flags = fresh.headers["traceresponse"].split("-")[1:]
        assert int(flags, 16) & 1 == 0  # not sampled (0x02 says its id is random)
        # The client asked for its trace to be kept (flag 01): it is, whatever the rate.
        kept_id, span_id, header = traceparent()
        assert post_chat(running, "vision", traceparent=header).status_code == 200
        spans = receiver.wait_for_trace(kept_id, turn_complete("/v1/chat/completions"))
        assert_one_turn(spans, span_id, "/v1/chat/completions")
        assert receiver.trace(trace_id) == []  # sent by now, had it been recorded
        sent = [
            headers.get(b"traceparent", b"").decode()
            for headers in upstream.request_headers
            if trace_id in headers.get(b"traceparent", b"").decode()
        ]
        assert len(sent) == 1 and int(sent[0][-2:], 16) & 1 == 0  # it hears "not sampled"


def test_while_off_no_tracer_is_imported() -> None:
    """Both processes' modules load, and an edge app is built, without the tracer, an exporter
    or OTLP's protobuf classes (FastAPI imports OpenTelemetry's API itself, and leaves it idle
    without a global provider)."""
    code = (
        "import sys\n"
        "import agent_worker.server, gateway_edge.app\n"
        "from services.config import ClawgateConfig\n"
        "config = ClawgateConfig.model_validate({'gateway': {'auth': {'token': 't'}}})\n"
        "gateway_edge.app.create_app(config)\n"
        "sdk = ('opentelemetry.sdk', 'opentelemetry.exporter', 'opentelemetry.proto',"
        " 'services.otlp_')\n"
        "print(sorted(m for m in sys.modules if m.startswith(sdk)))\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout

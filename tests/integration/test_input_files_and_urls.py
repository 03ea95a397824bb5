"""Files and image URLs through real processes: the `openai` SDK in front, a local file server
for the URLs, the Responses stand-in as the model (it says back its instructions, the user's
text and each image it got), so what reached the model is read from the answer."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from devkit.processes import TOKEN, Stack, echo_config, start_stack
from devkit.responses_standin import API_KEY, ResponsesStandIn
from tests.support.file_server import FileServer
from tests.support.pdf import pdf_with_text

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
NOTES = "Meeting notes: the launch moves to Friday."
REPORT = "Quarterly revenue grew 12 percent"


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    served = {
        "/cat.png": ("image/png", PNG),
        "/big.png": ("image/png", PNG + b"\0" * 50_000),
        "/report.pdf": ("application/pdf", pdf_with_text(REPORT)),
    }
    with FileServer(served, slow_seconds=5) as server:
        yield server


@pytest.fixture(scope="module")
def standin() -> Iterator[ResponsesStandIn]:
    with ResponsesStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    standin: ResponsesStandIn, files: FileServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("input-sources")
    config = echo_config(tmp_path)
    endpoints = config["gateway"]["http"]["endpoints"]
    # Chat: image URLs allowed for the file server's name, loopback NOT allowed.
    endpoints["chatCompletions"]["images"] = {"allowUrl": True, "urlAllowlist": ["localhost"]}
    # Responses: the file server's name, and the metadata address, with loopback allowed.
    hosts = ["localhost", "169.254.169.254"]
    endpoints["responses"] = {
        "enabled": True,
        "images": {"urlAllowlist": hosts, "allowLoopback": True, "maxBytes": 10_000},
        "files": {"urlAllowlist": hosts, "allowLoopback": True, "timeoutMs": 1000},
    }
    config["models"]["providers"]["oai"] = {
        "api": "openai-responses",
        "baseUrl": standin.base_url,
        "apiKey": API_KEY,
        "models": [{"id": "said-back", "input": ["text", "image"]}],
    }
    config["agents"]["list"].append({"id": "reader", "model": "oai/said-back"})
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def respond(client: openai.OpenAI, *parts: dict[str, Any]) -> str:
    content: Any = [{"type": "input_text", "text": "what is in it?"}, *parts]
    response = client.responses.create(
        model="openclaw:reader", input=[{"role": "user", "content": content}]
    )
    return response.output_text


def refusal(client: openai.OpenAI, *parts: dict[str, Any]) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as refused:
        respond(client, *parts)
    return refused.value


def test_a_text_file_and_a_pdf_reach_the_model_as_text(
    client: openai.OpenAI, standin: ResponsesStandIn
) -> None:
    pdf = pdf_with_text(REPORT)
    answer = respond(
        client,
        {"type": "input_file", "filename": "notes.txt", "file_data": b64(NOTES.encode())},
        {
            "type": "input_file",
            "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf)},
        },
    )
    assert NOTES in answer and REPORT in answer
    instructions = standin.requests[-1]["instructions"]
    assert instructions.count("<<<EXTERNAL_UNTRUSTED_CONTENT") == 2
    # The files are the turn's instructions, not the user's message that the session keeps.
    assert standin.requests[-1]["input"][-1]["content"] == "what is in it?"


def test_chats_file_part_is_read_too(client: openai.OpenAI) -> None:
    part: Any = {
        "type": "file",
        "file": {
            "filename": "notes.txt",
            "file_data": f"data:text/plain;base64,{b64(NOTES.encode())}",
        },
    }
    completion = client.chat.completions.create(
        model="openclaw:reader",
        messages=[{"role": "user", "content": [{"type": "text", "text": "read"}, part]}],
    )
    assert NOTES in (completion.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("part", "param", "message"),
    [
        (
            {"type": "input_file", "filename": "a.txt", "file_data": "@@@"},
            "input[0].content[1].file_data",
            "base64 data is invalid",
        ),
        (
            {"type": "input_file", "filename": "a.txt", "file_data": b64(b"x" * (6 << 20))},
            "input[0].content[1].file_data",
            "maxBytes",
        ),
        (
            {"type": "input_file", "filename": "run.sh", "file_data": b64(b"#!/bin/sh")},
            "input[0].content[1].file_data",
            "Unsupported file type",
        ),
    ],
)
def test_a_bad_file_is_a_400_naming_the_part(
    client: openai.OpenAI, part: dict[str, Any], param: str, message: str
) -> None:
    refused = refusal(client, part)
    assert message in refused.message and refused.body["param"] == param  # type: ignore[index]


def test_chat_refuses_an_image_url_resolving_to_loopback_and_responses_fetches_it(
    client: openai.OpenAI, files: FileServer
) -> None:
    url = files.url("/cat.png", "localhost")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="openclaw:reader",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )
    assert "loopback" in refused.value.message
    before = list(files.paths)
    assert f"image=image/png:{len(PNG)}" in respond(
        client, {"type": "input_image", "image_url": url}
    )
    assert files.paths[len(before) :] == ["/cat.png"]  # fetched by the allowed endpoint only


def test_a_file_by_url_reaches_the_model(client: openai.OpenAI, files: FileServer) -> None:
    url = files.url("/report.pdf", "localhost")
    assert REPORT in respond(client, {"type": "input_file", "file_url": url})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect?to=http://169.254.169.254/latest/meta-data/", "private, loopback or reserved"),
        ("/redirect?to=http://127.0.0.2.nip.example/cat.png", "not in urlAllowlist"),
        ("/big.png", "maxBytes"),
    ],
)
def test_unsafe_or_oversize_image_urls_are_refused(
    client: openai.OpenAI, files: FileServer, path: str, message: str
) -> None:
    refused = refusal(client, {"type": "input_image", "image_url": files.url(path, "localhost")})
    assert message in refused.message
    assert refused.body["param"] == "input[0].content[1].image_url"  # type: ignore[index]


def test_the_metadata_address_is_refused_even_when_allow_listed(client: openai.OpenAI) -> None:
    url = "http://169.254.169.254/latest/meta-data/"
    refused = refusal(client, {"type": "input_image", "image_url": url})
    assert "private, loopback or reserved" in refused.message


def test_a_slow_download_is_refused_within_its_timeout(
    client: openai.OpenAI, files: FileServer
) -> None:
    started = time.monotonic()
    refused = refusal(
        client, {"type": "input_file", "file_url": files.url("/slow/report.pdf", "localhost")}
    )
    assert "timeoutMs" in refused.message
    assert time.monotonic() - started < 4  # the server would have taken 5 s

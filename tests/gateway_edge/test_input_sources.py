"""Images and files by URL and inline, against a real local HTTP server: the address and host
checks on every hop, the caps, and files read as text (a PDF made here)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError
from gateway_edge.input_sources import InputSources
from gateway_edge.url_fetch import FetchRefused, address_allowed, fetch, host_allowed
from services.gateway_config import ChatCompletionsEndpointConfig, ResponsesEndpointConfig
from services.input_sources_config import UrlFetchSection
from services.off_loop import OffLoop
from tests.support.file_server import FileServer
from tests.support.pdf import pdf_with_text

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
NOTES = "Meeting notes: the launch moves to Friday."


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    files = {
        "/cat.png": ("image/png", PNG),
        "/notes.txt": ("text/plain; charset=utf-8", NOTES.encode()),
        "/big.png": ("image/png", PNG + b"\0" * 5000),
        "/page.svg": ("image/svg+xml", b"<svg/>"),
    }
    with FileServer(files, slow_seconds=3) as running:
        yield running


def loopback(**keys: object) -> UrlFetchSection:
    return UrlFetchSection.model_validate({"allowLoopback": True, **keys})


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_fetched(address: str, allowed: bool) -> None:
    assert address_allowed(address, allow_loopback=False) is allowed


def test_loopback_is_allowed_only_when_asked_and_nothing_else_private() -> None:
    assert address_allowed("127.0.0.1", allow_loopback=True)
    assert address_allowed("::ffff:127.0.0.1", allow_loopback=True)
    assert not address_allowed("169.254.169.254", allow_loopback=True)
    assert not address_allowed("10.0.0.1", allow_loopback=True)


def test_the_allowlist_takes_exact_names_and_subdomains_not_the_apex() -> None:
    allowlist = ["cdn.example.com", "*.assets.example.com"]
    assert host_allowed("CDN.example.com", allowlist)
    assert host_allowed("a.assets.example.com", allowlist)
    assert not host_allowed("assets.example.com", allowlist)
    assert not host_allowed("evilassets.example.com", allowlist)
    assert not host_allowed("cdn.example.com.evil.net", allowlist)
    assert host_allowed("anything.net", [])


async def test_a_loopback_url_is_refused_unless_allowed(server: FileServer) -> None:
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(FetchRefused, match="private, loopback or reserved"):
            await fetch(server.url("/cat.png", host), UrlFetchSection(), 10_000)
    fetched = await fetch(server.url("/cat.png", "localhost"), loopback(), 10_000)
    assert fetched.data == PNG and fetched.media_type == "image/png"


async def test_a_redirect_is_checked_on_every_hop(server: FileServer) -> None:
    policy = loopback(maxRedirects=2)
    meta = server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchRefused, match="private, loopback or reserved"):
        await fetch(meta, policy, 10_000)
    inside = server.url(f"/redirect?to=http://localhost:{server.port}/cat.png")
    assert (await fetch(inside, policy, 10_000)).data == PNG
    with pytest.raises(FetchRefused, match="not in urlAllowlist"):
        elsewhere = server.url("/redirect?to=http://other.example/cat.png", "localhost")
        await fetch(elsewhere, loopback(urlAllowlist=["localhost"]), 10_000)
    with pytest.raises(FetchRefused, match="private, loopback or reserved"):
        await fetch(inside, UrlFetchSection(urlAllowlist=["127.0.0.1", "localhost"]), 10_000)


async def test_too_many_redirects_too_big_and_too_slow_are_refused(server: FileServer) -> None:
    hop = server.url("/redirect?to=" + server.url("/cat.png"))
    with pytest.raises(FetchRefused, match="maxRedirects"):
        await fetch(hop, loopback(maxRedirects=0), 10_000)
    with pytest.raises(FetchRefused, match="maxBytes"):  # said by its content-length
        await fetch(server.url("/big.png"), loopback(), 1000)
    with pytest.raises(FetchRefused, match="maxBytes"):  # counted as it arrives
        await fetch(server.url("/chunked/big.png"), loopback(), 1000)
    with pytest.raises(FetchRefused, match="within 300 ms"):
        await fetch(server.url("/slow/cat.png"), loopback(timeoutMs=300), 10_000)
    with pytest.raises(FetchRefused, match="answered 404"):
        await fetch(server.url("/missing.png"), loopback(), 10_000)
    with pytest.raises(FetchRefused, match="only http"):
        await fetch("file:///etc/passwd", loopback(), 10_000)


async def test_a_url_with_spaces_or_other_letters_is_sent_encoded(server: FileServer) -> None:
    server.files["/a b/ü.png"] = ("image/png", PNG)
    assert (await fetch(server.url("/a b/ü.png"), loopback(), 10_000)).data == PNG
    with pytest.raises(FetchRefused, match="could not be resolved|invalid"):
        await fetch("http://exa mple.invalid/x.png", loopback(timeoutMs=3000), 10_000)


def sources(**files_and_images: object) -> InputSources:
    return InputSources(ResponsesEndpointConfig.model_validate(files_and_images))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_text_file_and_a_pdf_become_untrusted_instructions() -> None:
    parts = sources()
    parts.file("a", data=b64(NOTES.encode()), filename="notes.txt")
    pdf = pdf_with_text("Quarterly revenue grew 12 percent")
    parts.file("b", data=f"data:application/pdf;base64,{b64(pdf)}", filename="q3.pdf")
    instructions: list[str] = ["be brief"]
    await parts.ready(instructions, OffLoop(threads=1))
    assert instructions[0] == "be brief"
    notes, report = instructions[1:]
    assert NOTES in notes and "File: notes.txt (text/plain)" in notes
    assert "Quarterly revenue grew 12 percent" in report and "(application/pdf)" in report
    opening, *_, closing = notes.splitlines()
    assert opening.startswith("<<<EXTERNAL_UNTRUSTED_CONTENT id=")
    assert closing == opening.replace("<<<EXTERNAL", "<<<END_EXTERNAL")


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"data": "@@not base64@@", "filename": "a.txt"}, "base64 data is invalid"),
        ({"data": b64(b"MZ\x90\x00"), "filename": "tool.exe"}, "Unsupported file type"),
        ({"data": b64(b"x" * 2000), "filename": "big.txt"}, "maxBytes"),
        ({"data": b64(b"%PDF-1.4 broken"), "media_type": "application/pdf"}, "PDF could not"),
        ({"data": b64(b"y" * 900), "filename": "long.txt"}, "maxChars"),
    ],
)
async def test_file_refusals_name_the_part(part: dict[str, str], message: str) -> None:
    parts = sources(files={"maxBytes": 1000, "maxChars": 500})
    with pytest.raises(ApiError, match=message) as refused:
        parts.file("input[0].content[1].file_data", **part)
        await parts.ready([], OffLoop(threads=1))
    assert refused.value.param == "input[0].content[1].file_data"
    assert refused.value.status == 400


async def test_image_urls_are_fetched_into_their_message_in_place(server: FileServer) -> None:
    parts = sources(images={"allowLoopback": True})
    message = pb.Message(role=pb.ROLE_USER)
    parts.image(message, f"data:image/gif;base64,{b64(b'GIF89a')}", "i0")
    parts.image(message, server.url("/cat.png"), "i1")
    parts.image(message, f"data:image/webp;base64,{b64(b'RIFF')}", "i2")
    await parts.ready([], OffLoop(threads=1))
    assert [(image.media_type, image.data) for image in message.images] == [
        ("image/gif", b"GIF89a"),
        ("image/png", PNG),
        ("image/webp", b"RIFF"),
    ]


async def test_a_fetched_type_not_allowed_and_the_url_part_count_are_refused(
    server: FileServer,
) -> None:
    parts = sources(images={"allowLoopback": True})
    parts.image(pb.Message(), server.url("/page.svg"), "i0")
    with pytest.raises(ApiError, match="Unsupported image type 'image/svg"):
        await parts.ready([], OffLoop(threads=1))
    few = sources(maxUrlParts=1)
    few.image(pb.Message(), server.url("/cat.png"), "i0")
    with pytest.raises(ApiError, match="maxUrlParts") as refused:
        few.file("f1", url=server.url("/notes.txt"))
    assert refused.value.param == "f1"


def test_chat_refuses_image_urls_unless_allowed() -> None:
    chat = InputSources(ChatCompletionsEndpointConfig())
    with pytest.raises(ApiError, match="images.allowUrl is off"):
        chat.image(pb.Message(), "https://example.com/cat.png", "m")
    opened = ChatCompletionsEndpointConfig.model_validate({"images": {"allowUrl": True}})
    InputSources(opened).image(pb.Message(), "https://example.com/cat.png", "m")

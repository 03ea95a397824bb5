"""The images and files a request carries, inline or by URL, within its endpoint's limits
(`gateway.http.endpoints.<endpoint>.images` / `.files`, `maxUrlParts`).

The dialects hand each part over as they read the request: inline images are decoded into
their message at once, URLs and files are noted. `ready` then fetches what URLs name (each
fetch guarded: url_fetch.py) and reads every file's text on a thread (PDFs with pypdf). A
file's text goes to the model as untrusted content in that turn's instructions, as OpenClaw
puts it in the system prompt: it is not stored as the user's message. Every refusal is a 400
naming the part as the client numbered it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import mimetypes
from dataclasses import dataclass

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.external_content import untrusted
from gateway_edge.url_fetch import Fetched, FetchRefused, fetch
from services.input_sources_config import InputSourcesSection
from services.off_loop import OffLoop

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # decoded, all of a request's images together
_TEXT_TYPES = ("text/plain", "text/markdown", "text/html", "text/csv", "application/json")


@dataclass(slots=True)
class _ImageByUrl:
    image: pb.Image  # the message's own entry, filled in once fetched
    url: str
    param: str


@dataclass(slots=True)
class _File:
    param: str
    filename: str
    media_type: str  # "" until known (a URL's answer says it)
    data: bytes = b""
    url: str = ""


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a `data:<type>;base64,<payload>` URL, else None."""
    header, comma, payload = url.partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        return None
    return header.removeprefix("data:").removesuffix(";base64").lower(), payload


def _base64(payload: str, what: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"The {what}'s base64 data is invalid.", param) from None


def _guessed_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if name.lower().endswith((".md", ".markdown")):
        return "text/markdown"
    return guessed or ""


class InputSources:
    def __init__(self, config: InputSourcesSection) -> None:
        self._config = config
        self._image_count = 0
        self._image_bytes = 0
        self._url_parts = 0
        self._image_urls: list[_ImageByUrl] = []
        self._files: list[_File] = []

    def image(self, into: pb.Message, url: str, param: str) -> None:
        """An image part: a data: URI decoded now, a URL (where allowed) fetched by `ready`."""
        images = self._config.images
        inline = _data_url(url)
        if inline is None and not url.startswith(("http://", "https://")):
            raise bad_request(
                "An image must be a base64 data: URI (data:image/png;base64,...) or an https://"
                " URL.",
                param,
            )
        self._image_count += 1
        if self._image_count > MAX_IMAGES:
            raise bad_request(f"At most {MAX_IMAGES} images are allowed per request.", param)
        if inline is None:
            if not images.allow_url:
                raise bad_request(
                    "Image URLs are not accepted by this endpoint (images.allowUrl is off): send"
                    " the image as a base64 data: URI.",
                    param,
                )
            self._count_url(param)
            self._image_urls.append(_ImageByUrl(into.images.add(), url, param))
            return
        media_type, payload = inline
        self._check_image_type(media_type, param)
        data = _base64(payload, "image", param)
        self._count_image_bytes(len(data), param)
        into.images.add(media_type=media_type, data=data)

    def file(
        self,
        param: str,
        *,
        data: str | None = None,
        url: str | None = None,
        media_type: str | None = None,
        filename: str | None = None,
    ) -> None:
        """A file part: `data` base64 (bare, or a data: URL naming its type), or a `url`."""
        files = self._config.files
        name = filename or ""
        if url is not None:
            if not files.allow_url:
                raise bad_request(
                    "File URLs are not accepted by this endpoint (files.allowUrl is off): send"
                    " the file's data.",
                    param,
                )
            if not url.startswith(("http://", "https://")):
                raise bad_request("A file URL must be an http:// or https:// URL.", param)
            self._count_url(param)
            declared = (media_type or "").lower()
            self._files.append(_File(param, name or url.rsplit("/", 1)[-1], declared, url=url))
            return
        if data is None:
            raise bad_request("A file needs its data (file_data) or a URL (file_url).", param)
        inline = _data_url(data)
        payload = data if inline is None else inline[1]
        kind = (media_type or (inline[0] if inline else "") or _guessed_type(name)).lower()
        self._check_file_type(kind, param)
        decoded = _base64(payload, "file", param)
        self._check_file_size(len(decoded), param)
        self._files.append(_File(param, name or "file", kind, decoded))

    @property
    def pending(self) -> bool:
        """Whether `ready` has work: URLs to fetch or files to read."""
        return bool(self._image_urls or self._files)

    async def ready(self, instructions: list[str], off_loop: OffLoop) -> None:
        """Fetches every URL part and reads every file; the files' texts join `instructions`."""
        fetches = [self._fetch_image(part) for part in self._image_urls]
        fetches += [self._fetch_file(part) for part in self._files if part.url]
        if fetches:
            try:
                async with asyncio.TaskGroup() as group:
                    for work in fetches:
                        group.create_task(work)
            except BaseExceptionGroup as failures:  # the first refusal, for the client
                refusal = next((e for e in failures.exceptions if isinstance(e, ApiError)), None)
                if refusal is None:
                    raise
                raise refusal from None
        if self._files:
            instructions += await off_loop.run(False, self._file_texts)

    async def _fetch_image(self, part: _ImageByUrl) -> None:
        images = self._config.images
        fetched = await self._fetched(part.url, part.param, images.max_bytes, "image")
        media_type = fetched.media_type
        if media_type in ("", "application/octet-stream"):
            media_type = _guessed_type(fetched.url)
        self._check_image_type(media_type, part.param)
        self._count_image_bytes(len(fetched.data), part.param)
        part.image.media_type = media_type
        part.image.data = fetched.data

    async def _fetch_file(self, part: _File) -> None:
        fetched = await self._fetched(part.url, part.param, self._config.files.max_bytes, "file")
        media_type = part.media_type or fetched.media_type
        if media_type in ("", "application/octet-stream"):
            media_type = _guessed_type(fetched.url)
        self._check_file_type(media_type, part.param)
        part.media_type, part.data = media_type, fetched.data

    async def _fetched(self, url: str, param: str, max_bytes: int, what: str) -> Fetched:
        policy = self._config.images if what == "image" else self._config.files
        try:
            return await fetch(url, policy, max_bytes)
        except FetchRefused as refused:
            raise bad_request(f"The {what} at this URL was not fetched: {refused}", param) from None

    def _file_texts(self) -> list[str]:
        return [
            untrusted(self._text_of(part), f"File: {part.filename} ({part.media_type})")
            for part in self._files
        ]

    def _text_of(self, part: _File) -> str:
        files = self._config.files
        if part.media_type == "application/pdf":
            text = _pdf_text(part.data, files.pdf.max_pages, files.max_chars, part.param)
        else:
            text = _decoded_text(part.data)
        if len(text) > files.max_chars:
            raise bad_request(
                f"The file's text is longer than {files.max_chars} characters (maxChars).",
                part.param,
            )
        return text

    def _count_url(self, param: str) -> None:
        self._url_parts += 1
        limit = self._config.max_url_parts
        if self._url_parts > limit:
            raise bad_request(
                f"At most {limit} image and file URLs are allowed per request (maxUrlParts).",
                param,
            )

    def _check_image_type(self, media_type: str, param: str) -> None:
        allowed = self._config.images.allowed_mimes
        if media_type not in allowed:
            raise bad_request(
                f"Unsupported image type {media_type!r}; allowed: {', '.join(allowed)}.", param
            )

    def _count_image_bytes(self, size: int, param: str) -> None:
        limit = self._config.images.max_bytes
        if size > limit:
            raise bad_request(f"The image is larger than {limit} bytes (maxBytes).", param)
        self._image_bytes += size
        if self._image_bytes > MAX_IMAGE_BYTES:
            raise bad_request(
                f"Images may total at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB per request.",
                param,
            )

    def _check_file_type(self, media_type: str, param: str) -> None:
        allowed = self._config.files.allowed_mimes
        if media_type not in allowed:
            raise bad_request(
                f"Unsupported file type {media_type or 'unknown'!r}; allowed:"
                f" {', '.join(allowed)}.",
                param,
            )

    def _check_file_size(self, size: int, param: str) -> None:
        limit = self._config.files.max_bytes
        if size > limit:
            raise bad_request(f"The file is larger than {limit} bytes (maxBytes).", param)


def _decoded_text(data: bytes) -> str:
    """Text in the encoding its bytes show: a BOM's, else UTF-8, else Windows-1252."""
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _pdf_text(data: bytes, max_pages: int, max_chars: int, param: str) -> str:
    """The text of a PDF's first `max_pages` pages (it renders no page to an image)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = []
        size = 0
        for page in reader.pages[:max_pages]:
            text = page.extract_text() or ""
            pages.append(text)
            size += len(text)
            if size > max_chars:
                break  # refused as too long by the caller: no need to read on
    except Exception as error:  # noqa: BLE001 - any failure of a parser of untrusted bytes
        raise bad_request(f"The PDF could not be read: {error}", param) from None
    if len(reader.pages) > max_pages:
        pages.append(f"[only the first {max_pages} of {len(reader.pages)} pages were read]")
    return "\n\n".join(pages)

"""What a turn endpoint takes as images and files beyond inline text: OpenClaw's
`gateway.http.endpoints.<endpoint>.images` / `.files` blocks and `maxUrlParts`, with its
defaults (URLs on for `/v1/responses`, off for chat's images)."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.config_section import Section

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
FILE_TYPES = (
    "text/plain",
    "text/markdown",
    "text/html",
    "text/csv",
    "application/json",
    "application/pdf",
)


class UrlFetchSection(Section):
    allow_url: bool = Field(True, alias="allowUrl")
    # Host names a URL may name: exact, or `*.example.com` for its subdomains (not the apex).
    # Empty: any public host.
    url_allowlist: list[str] = Field(default_factory=list, alias="urlAllowlist")
    max_redirects: int = Field(3, alias="maxRedirects", ge=0, le=20)
    timeout_ms: int = Field(10_000, alias="timeoutMs", ge=1)
    # Lets URLs reach loopback addresses (a file server beside the gateway); every other
    # private, link-local or reserved range stays refused.
    allow_loopback: bool = Field(False, alias="allowLoopback")

    @field_validator("url_allowlist")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            name = host.removeprefix("*.")
            if not name or "*" in name or "/" in name or ":" in name:
                raise ValueError(f"{host!r}: a host name, or *.domain for its subdomains")
        return [host.lower() for host in hosts]


class ImagesConfig(UrlFetchSection):
    allowed_mimes: list[str] = Field(
        default_factory=lambda: list(IMAGE_TYPES), alias="allowedMimes"
    )
    max_bytes: int = Field(10 * 1024 * 1024, alias="maxBytes", ge=1)


class PdfConfig(Section):
    # Pages whose text is read (OpenClaw renders these to images when they hold little text;
    # clawgate reads text only).
    max_pages: int = Field(4, alias="maxPages", ge=1)
    max_pixels: int = Field(4_000_000, alias="maxPixels", ge=1)  # accepted, unused: no rendering
    min_text_chars: int = Field(200, alias="minTextChars", ge=0)


class FilesConfig(UrlFetchSection):
    allowed_mimes: list[str] = Field(default_factory=lambda: list(FILE_TYPES), alias="allowedMimes")
    max_bytes: int = Field(5 * 1024 * 1024, alias="maxBytes", ge=1)
    max_chars: int = Field(60_000, alias="maxChars", ge=1)
    pdf: PdfConfig = Field(default_factory=PdfConfig)


class ChatImagesConfig(ImagesConfig):
    allow_url: bool = Field(False, alias="allowUrl")  # OpenClaw's chat default


class InputSourcesSection(Section):
    """The keys both turn endpoints share; chat's images refuse URLs unless told."""

    max_url_parts: int = Field(8, alias="maxUrlParts", ge=0)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)


class ChatInputSourcesSection(InputSourcesSection):
    images: ImagesConfig = Field(default_factory=ChatImagesConfig)

    @field_validator("images", mode="before")
    @classmethod
    def _chat_defaults(cls, images: object) -> object:
        return ChatImagesConfig.model_validate(images) if isinstance(images, dict) else images

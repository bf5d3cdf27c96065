"""Images in and out of HTTP bodies: base64 decoding that forgives what clients send, and encoding that keeps
the generation parameters inside the file (PNG text chunk, or EXIF UserComment for JPEG/WebP) so that a
saved or returned image can be read back by any PNG-info tool."""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import ExifTags, Image, PngImagePlugin

from .config import Limits
from .job import InvalidRequest

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}

# Keys Pillow puts in `image.info` that are file mechanics, not text a user wrote.
IGNORED_INFO_KEYS = {
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
    "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop", "transparency", "gamma",
    "srgb", "aspect", "interlace", "xmp",
}

_DATA_URL = re.compile(r"^data:[^,]*?,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# EXIF UserComment starts with an 8-byte character-code header.
_USER_COMMENT_UNICODE = b"UNICODE\0"
_USER_COMMENT_ASCII = b"ASCII\0\0\0"


class UnreadableImage(ValueError):
    """Bytes that Pillow cannot read as an image (or a decompression bomb); the message says why."""


class ImageTooLarge(InvalidRequest):
    """An uploaded image past `[limits]` max_upload_bytes (its file) or max_image_pixels (its declared size);
    every style renders it as its own 4xx."""

    code = "image_too_large"


def open_image(data: bytes, limits: Limits | None = None, field: str = "image") -> Image.Image:
    """Bytes → a loaded PIL image, or UnreadableImage. Each caller words the error in its own style.

    With `limits` (a client's upload): ImageTooLarge when the file passes max_upload_bytes or its declared size
    passes max_image_pixels, checked from the header before any pixel is decoded (a decompression bomb is refused
    unread), and when Pillow's own bomb guard trips."""
    if limits is not None and len(data) > limits.max_upload_bytes:
        raise ImageTooLarge(f"{field}: the image is {len(data)} bytes; the most is {limits.max_upload_bytes} bytes",
                            details={"field": field, "bytes": len(data), "max_bytes": limits.max_upload_bytes})
    try:
        image = Image.open(io.BytesIO(data))
        if limits is not None and image.width * image.height > limits.max_image_pixels:
            raise ImageTooLarge(
                f"{field}: the image is {image.width}x{image.height} ({image.width * image.height} pixels); "
                f"the most is {limits.max_image_pixels} pixels",
                details={"field": field, "width": image.width, "height": image.height,
                         "max_pixels": limits.max_image_pixels})
        image.load()
    except Image.DecompressionBombError as e:
        if limits is not None:
            raise ImageTooLarge(f"{field}: the image is too large to decode ({e}); the most is "
                                f"{limits.max_image_pixels} pixels",
                                details={"field": field, "max_pixels": limits.max_image_pixels}) from None
        raise UnreadableImage(str(e)) from None
    except (OSError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise UnreadableImage(str(e)) from None
    return image


def decode_base64(data: str | bytes) -> bytes:
    """Base64 as clients send it (with or without a `data:...;base64,` prefix, with line breaks, URL-safe or
    unpadded) → bytes; ValueError when it is not base64. The one decoder: every style's images come through it."""
    text = data.decode("ascii", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    text = _WHITESPACE.sub("", _DATA_URL.sub("", text.strip(), count=1))
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def decode_base64_image(data: str | None, field: str = "image", limits: Limits | None = None) -> Image.Image:
    """Base64 (any form `decode_base64` reads) → a loaded PIL image. Errors name the field, since a bad image is
    the commonest client mistake. `limits`: a client's upload, held to `[limits]` (`open_image`)."""
    if data is None or not str(data).strip():
        raise InvalidRequest(f"{field}: no image data", details={"field": field})
    text = str(data).strip()
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(
            f"{field}: image URLs are not supported; send the image as base64", details={"field": field}
        )
    try:
        raw = decode_base64(text)
    except ValueError:
        raise InvalidRequest(f"{field}: invalid encoded image (not base64)", details={"field": field}) from None
    try:
        return open_image(raw, limits, field)
    except UnreadableImage as e:
        raise InvalidRequest(f"{field}: invalid encoded image ({e})", details={"field": field}) from None


def normalise_format(fmt: str | None) -> str:
    """'png' / 'jpg' / 'jpeg' / 'webp' (any case) → Pillow's format name."""
    key = (fmt or "png").strip().lower().lstrip(".")
    if key not in FORMATS:
        raise InvalidRequest(f"unsupported image format {fmt!r}; use one of png, jpg, webp")
    return FORMATS[key]


def _exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = _USER_COMMENT_UNICODE + text.encode("utf-16-be")
    return exif.tobytes()


def encode_image(
    image: Image.Image,
    fmt: str = "png",
    infotext: str | None = None,
    *,
    quality: int = 80,
    text_chunks: dict[str, str] | None = None,
    lossless_webp: bool = False,
) -> bytes:
    """Encode with the infotext embedded: PNG → `parameters` tEXt chunk (plus any `text_chunks`);
    JPEG/WebP → EXIF UserComment (they have no text chunks)."""
    pil_format = normalise_format(fmt)
    out = io.BytesIO()
    if pil_format == "PNG":
        chunks = dict(text_chunks or {})
        if infotext is not None:
            chunks["parameters"] = infotext
        meta = None
        if chunks:
            meta = PngImagePlugin.PngInfo()
            for key, value in chunks.items():
                meta.add_text(key, value)
        image.save(out, format="PNG", pnginfo=meta)
    else:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        kwargs = {"quality": int(quality)}
        if pil_format == "WEBP" and lossless_webp:
            kwargs["lossless"] = True
        if infotext is not None:
            kwargs["exif"] = _exif_with_comment(infotext)
        image.save(out, format=pil_format, **kwargs)
    return out.getvalue()


def encode_base64(image: Image.Image, fmt: str = "png", infotext: str | None = None, **kwargs) -> str:
    """Raw base64 of the encoded file, without a `data:` prefix (what A1111 clients decode)."""
    return base64.b64encode(encode_image(image, fmt, infotext, **kwargs)).decode("ascii")


def _decode_user_comment(raw) -> str | None:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)):
        return None
    raw = bytes(raw)
    header, body = raw[:8], raw[8:]
    if header == _USER_COMMENT_UNICODE:
        # The EXIF spec leaves the byte order open; writers use the file's, most often big-endian.
        be = body.decode("utf-16-be", errors="replace")
        le = body.decode("utf-16-le", errors="replace")
        return be if sum(c.isprintable() for c in be) >= sum(c.isprintable() for c in le) else le
    if header == _USER_COMMENT_ASCII or header == b"\0" * 8:
        return body.decode("ascii", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="replace").rstrip("\0")


def read_infotext(image: Image.Image) -> tuple[str | None, dict]:
    """(generation parameters text or None, the other text items) from a PNG chunk or EXIF UserComment."""
    items = {k: v for k, v in (image.info or {}).items() if isinstance(k, str)}
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        try:
            comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
        except Exception:  # a corrupt EXIF block is not the client's request failing
            comment = None
        text = _decode_user_comment(comment)
        if text:
            items["exif comment"] = text
            geninfo = geninfo or text
    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)
    # Only JSON-friendly values go back to clients.
    items = {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in items.items()}
    return (geninfo if isinstance(geninfo, str) else None), items

"""The Stability AI v2beta Stable Image dialect (reference/hosted_apis.md §B): `POST
/v2beta/stable-image/generate/{core,ultra,sd3}` with a multipart/form-data body, answered with the image bytes
(`accept: image/*`) or `{image, finish_reason, seed}` (`accept: application/json`), and errors as
`{id, name, errors[]}`.

This module owns everything about the style: the field limits and enums, the aspect-ratio → size tables, the
error shape, the translation request → Job and Result → response, and the reverse pair the relay uses
(Job → v2beta request, v2beta response → Result). The HTTP router (webui/routes/stability_v2.py) only reads
the capped body and binds `StabilityV2Api.generate` to the paths.

The API has no `steps`, sampler or (for core/ultra) guidance field: those are server choices, set in the
config's `[stability_v2]` table (see `Settings`).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import io
import json
import logging
import random
import re
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..images import UnreadableImage, encode_image, open_image
from . import PerService
from ..job import (
    GenerationFailed, InvalidRequest, Job, ModelInfo, ModelNotFound, QueueFull, Result, SdgateError,
)
from ..infotext import VERSION, create_infotext
from ..styles import StyleStore, styles_path

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ tables

ENDPOINTS = ("core", "ultra", "sd3")
PATH = "/v2beta/stable-image/generate/{endpoint}"
MAX_SEED = 4294967294
MAX_PROMPT = 10000
MAX_BODY = 10 * 1024 * 1024  # "payloads cannot be larger than 10MiB in size"
MAX_CLIENT_HEADER = 256
CLIENT_HEADERS = ("stability-client-id", "stability-client-user-id", "stability-client-version")

ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
# §B.5 (our proposal; the docs give only megapixels). ultra/sd3: the SDXL buckets (~1 MP);
# core: multiples of 64 nearest 1.5 MP.
SIZES_1MP = {
    "21:9": (1536, 640), "16:9": (1344, 768), "3:2": (1216, 832), "5:4": (1152, 896), "1:1": (1024, 1024),
    "4:5": (896, 1152), "2:3": (832, 1216), "9:16": (768, 1344), "9:21": (640, 1536),
}
SIZES_1_5MP = {
    "21:9": (1792, 768), "16:9": (1600, 896), "3:2": (1536, 1024), "5:4": (1344, 1088), "1:1": (1216, 1216),
    "4:5": (1088, 1344), "2:3": (1024, 1536), "9:16": (896, 1600), "9:21": (768, 1792),
}
ENDPOINT_SIZES = {"core": SIZES_1_5MP, "ultra": SIZES_1MP, "sd3": SIZES_1MP}
# Models trained at a smaller native size get the same shapes scaled down (side factor): an SD 1.x model asked
# for 1.5 MP repeats its subject; families not listed (SDXL, unknown hub repos) get the documented sizes.
FAMILY_SIDE_SCALE = {"sd1": 0.5, "sd2": 0.75}

OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
INPUT_FORMATS = {"PNG", "JPEG", "WEBP"}

# The 17 Stability presets (same enum as v1). The prompt templates come from styles.json, by the same name.
STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
)

SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
# Rerouted upstream to the 3.5 models since 2025-04-17; still accepted.
SD3_LEGACY = {"sd3-large": "sd3.5-large", "sd3-large-turbo": "sd3.5-large-turbo", "sd3-medium": "sd3.5-medium"}
SD3_FAST = ("sd3.5-large-turbo", "sd3.5-flash")  # distilled: default cfg 1 and the config's turbo_steps
SD3_DEFAULT_CFG = {"sd3.5-large": 4.0, "sd3.5-medium": 4.0, "sd3.5-large-turbo": 1.0, "sd3.5-flash": 1.0}

# Error names and their fixed texts (§B.4).
INTERNAL_MESSAGE = "An unexpected server error has occurred, please try again later."
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request was denied and you "
    "were not charged."
)
LANGUAGE_MESSAGE = "English is the only supported language for this service."
NAME_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "payload_too_large",
    422: "invalid_request", 429: "rate_limit_exceeded", 500: "internal_error", 503: "service_unavailable",
}

Endpoint = Literal["core", "ultra", "sd3"]
AspectRatio = Literal["21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"]
OutputFormat = Literal["jpeg", "png", "webp"]
StylePreset = Literal[
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
]
SD3Model = Literal[
    "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large", "sd3-large-turbo", "sd3-medium"
]

# ------------------------------------------------------------------------------------------------ errors


class V2Error(SdgateError):
    """An error already in v2beta terms: a status, a `name` and the `errors` strings."""

    def __init__(self, status: int, name: str, errors: list[str]):
        super().__init__("; ".join(errors), details={"name": name, "errors": list(errors)})
        self.status = status
        self.code = name
        self.name = name
        self.errors = list(errors) or [name]


def bad_request(*errors: str) -> V2Error:
    return V2Error(400, "bad_request", list(errors))


def payload_too_large() -> V2Error:
    return V2Error(413, "payload_too_large", ["body: payloads cannot be larger than 10MiB in size"])


def not_found(path: str) -> V2Error:
    return V2Error(404, "not_found", [f"{path}: no such endpoint; use core, ultra or sd3"])


def new_request_id() -> str:
    return uuid.uuid4().hex


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, `{id, name, errors}`) for any exception. Our own errors keep their message; anything else is a
    500 with the documented generic text (the server log has the traceback)."""
    from starlette.exceptions import HTTPException

    if isinstance(exc, V2Error):
        return exc.status, {"id": request_id, "name": exc.name, "errors": exc.errors}
    if isinstance(exc, HTTPException):
        status = exc.status_code
        return status, {"id": request_id, "name": NAME_BY_STATUS.get(status, "bad_request"),
                        "errors": [str(exc.detail or "request failed")]}
    if isinstance(exc, SdgateError):
        status = int(exc.status)
        # a relayed upstream error keeps its upstream name
        name = exc.details.get("name") if isinstance(exc.details.get("name"), str) else None
        return status, {"id": request_id, "name": name or NAME_BY_STATUS.get(status, "internal_error"),
                        "errors": [exc.message or INTERNAL_MESSAGE]}
    return 500, {"id": request_id, "name": "internal_error", "errors": [INTERNAL_MESSAGE]}


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class Settings:
    """The `[stability_v2]` config table: what the API leaves to the server."""

    steps: int = 30
    turbo_steps: int = 4  # sd3.5-large-turbo / sd3.5-flash
    cfg_scale: float = 7.0  # core and ultra (sd3 has its own field and per-model defaults)
    sampler: str = "DPM++ 2M"
    schedule: Optional[str] = "Karras"
    size_scale: float = 1.0  # side factor on every output size (small test models); the ratio is kept
    jpeg_quality: int = 90
    max_body: int = MAX_BODY
    rate_limit: int = 150  # requests per window and caller (0: off); the caller is then refused for rate_timeout_s
    rate_window_s: float = 10.0
    rate_timeout_s: float = 60.0
    blocked_terms: list[str] = field(default_factory=list)  # prompt words refused with 403 content_moderation
    english_only: bool = False  # refuse prompts in other scripts with 422 invalid_language, as upstream does
    styles_file: Optional[str] = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "Settings":
        raw = raw or {}
        section = dict(raw.get("stability_v2", {}) or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            log.warning("[stability_v2]: unknown keys ignored: %s", ", ".join(unknown))
        settings = cls(**{k: v for k, v in section.items() if k in known})
        settings._coerce()
        settings.styles_file = str(styles_path(dict(raw), "stability_v2"))
        return settings

    def _coerce(self) -> None:
        """Numbers and flags from TOML or the environment as the right types; a bad value fails at startup."""
        from ..config import ConfigError
        from ..local.samplers import resolve_sampler

        for name, f in self.__dataclass_fields__.items():
            value, kind = getattr(self, name), type(f.default) if f.default is not None else None
            try:
                if kind is bool:
                    value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif kind in (int, float):
                    value = kind(value)
                elif name == "blocked_terms":
                    value = [str(t) for t in value]
            except (TypeError, ValueError):
                raise ConfigError(f"[stability_v2] {name}: bad value {value!r}") from None
            setattr(self, name, value)
        if self.steps < 1 or self.turbo_steps < 1 or self.size_scale <= 0 or self.max_body < 1:
            raise ConfigError("[stability_v2] steps, turbo_steps, size_scale and max_body must be positive")
        try:
            resolve_sampler(self.sampler, self.schedule)
        except SdgateError as e:
            raise ConfigError(f"[stability_v2] sampler/schedule: {e.message}") from None


# ------------------------------------------------------------------------------------------------ requests


class _V2Request(BaseModel):
    """Fields every generate endpoint takes. Form values arrive as strings; pydantic's lax mode turns "7" into 7.
    Unknown fields (and the official sample's empty `none` file part) are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT, description="1..10000 chars; (word:0.5) weights")
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    aspect_ratio: AspectRatio = "1:1"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="0: random")
    output_format: OutputFormat = "png"
    style_preset: Optional[StylePreset] = None


class CoreRequest(_V2Request):
    pass


class UltraRequest(_V2Request):
    image: Optional[bytes] = Field(None, repr=False, description="optional init image (png/jpeg/webp file part)")
    strength: Optional[float] = Field(None, ge=0, le=1, description="required with image; 0 keeps the image")

    @model_validator(mode="after")
    def _strength_with_image(self):
        if self.image is not None and self.strength is None:
            raise ValueError("strength: is required when image is provided")
        return self


class SD3Request(_V2Request):
    model: SD3Model = "sd3.5-large"
    mode: Literal["text-to-image", "image-to-image"] = "text-to-image"
    image: Optional[bytes] = Field(None, repr=False, description="required for image-to-image")
    strength: Optional[float] = Field(None, ge=0, le=1, description="required for image-to-image")
    cfg_scale: Optional[float] = Field(None, ge=1, le=10, description="default 4 (large/medium), 1 (turbo/flash)")

    @model_validator(mode="after")
    def _image_to_image(self):
        if self.mode == "image-to-image":
            missing = [f"{name}: is required for image-to-image mode"
                       for name in ("image", "strength") if getattr(self, name) is None]
            if missing:
                raise ValueError("; ".join(missing))
        return self

    @property
    def canonical_model(self) -> str:
        return SD3_LEGACY.get(self.model, self.model)


REQUEST_MODELS: dict[str, type[_V2Request]] = {"core": CoreRequest, "ultra": UltraRequest, "sd3": SD3Request}


def _error_strings(exc: ValidationError) -> list[str]:
    """pydantic errors → `["field: what is wrong"]`, the way upstream words them ("prompt: is required")."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or None
        kind, ctx = err.get("type"), err.get("ctx") or {}
        if kind == "missing":
            text = "is required"
        elif kind == "literal_error":
            text = f"must be one of {ctx.get('expected', '')}".replace("'", "")
        elif kind == "string_too_short":
            text = "cannot be empty"
        elif kind == "string_too_long":
            text = f"must be at most {ctx.get('max_length')} characters"
        elif kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            field_name = err["loc"][0] if err.get("loc") else ""
            text = f"{err['msg'][0].lower()}{err['msg'][1:]}"
            bounds = _BOUNDS.get(str(field_name))
            if bounds:
                text = f"must be between {bounds[0]} and {bounds[1]}"
        elif kind == "value_error":
            out.extend(part.strip() for part in str(ctx.get("error", err["msg"])).split(";"))
            continue
        else:
            text = f"{err['msg'][0].lower()}{err['msg'][1:]}"
        out.append(f"{loc}: {text}" if loc else text)
    return out or ["invalid request"]


_BOUNDS = {"seed": (0, MAX_SEED), "strength": (0, 1), "cfg_scale": (1, 10)}


def parse_request(endpoint: str, fields: Mapping[str, Any]) -> _V2Request:
    """Form fields (str, or bytes for file parts) → the endpoint's request model; a V2Error 400 otherwise.
    Empty values count as absent (clients send `seed=` for "default")."""
    if endpoint not in REQUEST_MODELS:
        raise not_found(endpoint)
    data = {k: v for k, v in fields.items() if not (isinstance(v, (str, bytes)) and v == "" and k != "prompt")}
    if isinstance(data.get("image"), bytes) and not data["image"]:
        data.pop("image")
    try:
        return REQUEST_MODELS[endpoint].model_validate(data)
    except ValidationError as e:
        raise bad_request(*_error_strings(e)) from None


async def read_form(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """A multipart body → {name: str for fields, bytes for files (the last part of a name wins)}."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser
    from python_multipart.multipart import parse_options_header

    content_type, _ = parse_options_header(headers.get("content-type") or "")
    if content_type != b"multipart/form-data":
        raise bad_request("content-type: must be multipart/form-data")

    async def stream():
        yield body
        yield b""

    hdrs = headers if isinstance(headers, Headers) else Headers(headers=dict(headers))
    try:
        form = await MultiPartParser(hdrs, stream(), max_part_size=MAX_BODY).parse()
    except MultiPartException as e:
        raise bad_request(f"body: {e.message}") from None
    except Exception as e:  # a malformed body must not become a 500
        raise bad_request(f"body: malformed multipart/form-data ({type(e).__name__})") from None
    fields: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[name] = await value.read()
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields


def decode_input_image(data: bytes, endpoint: str) -> Image.Image:
    """The `image` file part → a loaded RGB image, with upstream's format and size rules."""
    try:
        image = open_image(data)
    except UnreadableImage as e:
        raise bad_request(f"image: could not be read as png, jpeg or webp ({e})") from None
    if image.format not in INPUT_FORMATS:
        raise bad_request(f"image: format {image.format} is not supported; use png, jpeg or webp")
    w, h = image.size
    if min(w, h) < 64:
        raise bad_request(f"image: every side must be at least 64 pixels (got {w}x{h})")
    if endpoint == "ultra" and (max(w, h) > 16384 or w * h < 4096):
        raise bad_request(f"image: sides must be 64..16384 with at least 4096 pixels (got {w}x{h})")
    return image.convert("RGB")


# ------------------------------------------------------------------------------------------------ sizes


def _round_to(value: float, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def output_size(endpoint: str, aspect_ratio: str, family: str | None = None, scale: float = 1.0) -> tuple[int, int]:
    """The pixel size for an endpoint and aspect ratio on a model of `family`: the §B.5 table, scaled down for
    smaller-native families and by the configured `size_scale` (rounded to multiples of 8, ratio kept)."""
    w, h = ENDPOINT_SIZES[endpoint][aspect_ratio]
    factor = scale * FAMILY_SIDE_SCALE.get(family or "", 1.0)
    if factor == 1.0:
        return w, h
    return _round_to(w * factor, 8), _round_to(h * factor, 8)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The enum value closest to width:height (on a log scale, so 2:1 and 1:2 are equally far from 1:1)."""
    import math

    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda ar: abs(math.log(_ratio(ar)) - target))


def _ratio(aspect_ratio: str) -> float:
    a, b = aspect_ratio.split(":")
    return int(a) / int(b)


# ------------------------------------------------------------------------------------------------ guards


class RateLimiter:
    """Upstream's rule: more than `limit` requests in `window` seconds and the caller is refused for
    `timeout` seconds. Callers are keyed by a hash of their key (or their address)."""

    def __init__(self, limit: int, window: float, timeout: float):
        self.limit, self.window, self.timeout = limit, window, timeout
        self._hits: dict[str, collections.deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, caller: str, now: float | None = None) -> bool:
        if self.limit <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._blocked.get(caller, 0) > now:
                return False
            self._blocked.pop(caller, None)
            hits = self._hits.setdefault(caller, collections.deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                self._blocked[caller] = now + self.timeout
                hits.clear()
                return False
            hits.append(now)
            if len(self._hits) > 10000:  # forget idle callers
                for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
                    del self._hits[key]
            return True


def _non_latin_letters(text: str) -> bool:
    for ch in text:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return True
    return False


# ------------------------------------------------------------------------------------------------ replies


@dataclass
class Reply:
    """What the router sends: status, body bytes, media type and headers."""

    status: int
    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(exc: BaseException, request_id: str) -> Reply:
    status, body = error_body(exc, request_id)
    headers = {"x-request-id": request_id}
    if status == 503:
        headers["retry-after"] = "5"
    return Reply(status, json.dumps(body).encode(), "application/json", headers)


def finish_reason(result: Result, index: int = 0) -> str:
    # No output safety filter runs locally yet; when one does it marks its images in the Result's notes.
    marked = f"content filtered: image {index}"
    return "CONTENT_FILTERED" if any(n.startswith(marked) for n in result.notes) else "SUCCESS"


def result_to_reply(result: Result, req: _V2Request, *, accept_json: bool, request_id: str,
                    jpeg_quality: int = 90) -> Reply:
    """Result → the image bytes with `finish-reason`/`seed` headers, or `{image, finish_reason, seed}`."""
    if not result.images:
        raise GenerationFailed("the generation was interrupted before an image was made")
    image, seed = result.images[0], int(result.seeds[0])
    reason = finish_reason(result, 0)
    data = encode_image(image, req.output_format, infotext_for(result, seed), quality=jpeg_quality)
    mime = OUTPUT_FORMATS[req.output_format]
    if accept_json:
        body = {"image": base64.b64encode(data).decode("ascii"), "finish_reason": reason, "seed": seed}
        return Reply(200, json.dumps(body).encode(), f"application/json; type={mime}", {"x-request-id": request_id})
    headers = {"finish-reason": reason, "seed": str(seed), "x-request-id": request_id}
    return Reply(200, data, mime, headers)


def infotext_for(result: Result, seed: int) -> str:
    """A1111-style parameters text embedded in the file, so PNG-info tools show how the image was made."""
    job = result.job
    image = result.images[0]
    info = job.extra.get("stability_v2", {})
    params = {
        "Steps": job.steps, "Sampler": result.sampler, "Schedule type": result.schedule, "CFG scale": job.cfg_scale,
        "Seed": seed, "Size": f"{image.width}x{image.height}", "Model hash": result.model.hash,
        "Model": result.model.name,
        "Denoising strength": job.denoising_strength if job.init_image is not None else None,
        "Stability endpoint": info.get("endpoint"), "Style preset": info.get("fields", {}).get("style_preset"),
        "Version": VERSION,
    }
    return create_infotext(job.prompt, job.negative_prompt, params)


def wants_json(accept: str | None) -> bool:
    """`application/json` → JSON; `image/*`, `*/*` or nothing → the image bytes (upstream's default)."""
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/json":
            return True
        if media.startswith("image/") or media == "*/*":
            return False
    return False


# ------------------------------------------------------------------------------------------------ the API


class StabilityV2Api(PerService):
    """The v2beta generate endpoints over a Service."""

    def __init__(self, service, settings: Settings | None = None):
        self.service = service
        self.settings = settings or Settings.from_config(getattr(service.config, "raw", {}))
        s = self.settings
        self.styles = StyleStore(Path(s.styles_file))
        self.limiter = RateLimiter(int(s.rate_limit), float(s.rate_window_s), float(s.rate_timeout_s))
        self._blocked = [re.compile(rf"\b{re.escape(t.strip())}\b", re.IGNORECASE) for t in s.blocked_terms if t.strip()]

    # ---------------------------------------------------------------- guards (before the body is read)

    def check_caller(self, headers: Mapping[str, str], client_host: str | None) -> None:
        """Auth (bearer key; none configured → loopback only), then the per-caller rate limit."""
        from ..keys import bearer_token

        key = bearer_token(headers.get("authorization"))
        if not self.service.keys.allows("stability", key, client_host):
            text = ("authorization: missing or invalid API key" if self.service.keys.configured("stability")
                    else "authorization: this server answers loopback clients only until API keys are configured")
            raise V2Error(401, "unauthorized", [text])
        caller = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16] if key else f"host:{client_host}"
        if not self.limiter.allow(caller):
            raise V2Error(429, "rate_limit_exceeded", [
                f"You have exceeded the rate limit of {self.settings.rate_limit} requests within "
                f"{self.settings.rate_window_s:g} seconds; you have been timed out for "
                f"{self.settings.rate_timeout_s:g} seconds."
            ])
        for name in CLIENT_HEADERS:
            if len(headers.get(name) or "") > MAX_CLIENT_HEADER:
                raise bad_request(f"{name}: must be at most {MAX_CLIENT_HEADER} characters")

    # ---------------------------------------------------------------- request → job

    def moderate(self, req: _V2Request) -> None:
        if any(p.search(req.prompt) for p in self._blocked):
            raise V2Error(403, "content_moderation", [MODERATION_MESSAGE])
        if self.settings.english_only and _non_latin_letters(req.prompt + " " + req.negative_prompt):
            raise V2Error(422, "invalid_language", [LANGUAGE_MESSAGE])

    def _resolve_model(self, endpoint: str, req: _V2Request) -> ModelInfo:
        """sd3: the model name (legacy names → 3.5), then "sd3"; core/ultra: the endpoint name. Names map to local
        models through `[models.aliases]` (--demo maps them all to tiny-sdxl)."""
        names = [req.canonical_model, "sd3"] if isinstance(req, SD3Request) else [endpoint]
        for name in names:
            try:
                return self.service.models.resolve(name)
            except ModelNotFound:
                continue
        raise V2Error(404, "not_found", [
            f"model: no local model is mapped to {names[0]!r}; map it in the config, e.g. "
            f"[models.aliases] {names[-1]} = \"<checkpoint>\""
        ])

    def to_job(self, endpoint: str, req: _V2Request, request_id: str) -> Job:
        s = self.settings
        info = self._resolve_model(endpoint, req)
        prompt, negative = req.prompt, req.negative_prompt
        if req.style_preset:
            if req.style_preset not in {st.name for st in self.styles.all()}:
                log.warning("style preset %r is not in %s; prompt left as is", req.style_preset, self.styles.path)
            prompt, negative = self.styles.apply(prompt, negative, [req.style_preset])
        init_image = None
        strength = 0.75
        image = getattr(req, "image", None)
        use_image = image is not None and (endpoint == "ultra" or getattr(req, "mode", "") == "image-to-image")
        if use_image:
            init_image = decode_input_image(image, endpoint)
            strength = float(req.strength)
            # the output follows the input's shape (aspect_ratio is text-to-image only), at the endpoint's size
            aspect = nearest_aspect_ratio(*init_image.size)
        else:
            aspect = req.aspect_ratio
        width, height = output_size(endpoint, aspect, info.family, s.size_scale)
        steps, cfg = s.steps, s.cfg_scale
        if isinstance(req, SD3Request):
            model = req.canonical_model
            steps = s.turbo_steps if model in SD3_FAST else s.steps
            cfg = req.cfg_scale if req.cfg_scale is not None else SD3_DEFAULT_CFG[model]
        fields = {k: v for k, v in req.model_dump(exclude={"image"}).items() if v is not None}
        return Job(
            prompt=prompt,
            negative_prompt=negative,
            width=width,
            height=height,
            steps=int(steps),
            cfg_scale=float(cfg),
            sampler=s.sampler,
            schedule=s.schedule,
            seed=req.seed or random.randint(1, MAX_SEED),  # 0 = random; upstream reports the seed it drew
            model=info.title,
            prompt_weighting=True,  # upstream documents the (word:weight) syntax
            init_image=init_image,
            denoising_strength=strength,
            source="stability_v2",
            extra={"stability_v2": {"endpoint": endpoint, "fields": fields, "request_id": request_id}},
        )

    # ---------------------------------------------------------------- the route

    async def generate(self, endpoint: str, headers: Mapping[str, str], body: bytes, request_id: str) -> Reply:
        """One generate call, after `check_caller` and with the body already read (capped at max_body)."""
        if endpoint not in ENDPOINTS:
            raise not_found(endpoint)
        if len(body) > self.settings.max_body:
            raise payload_too_large()
        fields = await read_form(headers, body)
        req = parse_request(endpoint, fields)
        self.moderate(req)
        job = self.to_job(endpoint, req, request_id)
        engine = getattr(self.service, "engine", None)
        if engine is not None and hasattr(engine, "validate"):
            engine.validate(job)  # fail before queueing
        result = await self.service.run_async(job)
        return result_to_reply(result, req, accept_json=wants_json(headers.get("accept")), request_id=request_id,
                               jpeg_quality=self.settings.jpeg_quality)


# ================================================================================ the reverse pair (relay)
#
# A relay that sends a Job to a gateway speaking v2beta calls `job_to_upstream(job)`, POSTs each request of the
# plan (multipart, via `UpstreamRequest.httpx_kwargs()`), parses each answer with `parse_upstream_response(...)`
# (which raises the mapped SdgateError on an error answer) and builds the Result with `upstream_to_result(...)`.

# Job fields v2beta has no field for (reported when the job set them to something other than the default).
_NOT_CARRIED = ("steps", "sampler", "schedule", "clip_skip", "loras", "eta", "mask", "mask_crop_padding")


@dataclass
class UpstreamRequest:
    """One v2beta call: `path` goes after the gateway's base URL and prefix (e.g. "/sd")."""

    path: str
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # name → (filename, data, mime)
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"

    def httpx_kwargs(self) -> dict[str, Any]:
        """`files=` for httpx: text parts as (None, value), so the body is always real multipart (§D.4.3)."""
        parts: list[tuple[str, tuple]] = [(k, (None, v)) for k, v in self.fields.items()]
        parts += [(k, v) for k, v in self.files.items()]
        return {"files": parts, "headers": dict(self.headers)}


@dataclass
class UpstreamPlan:
    endpoint: str
    requests: list[UpstreamRequest]  # one per image: v2beta returns one image per call
    dropped: list[str]  # Job fields this style could not carry
    notes: list[str] = field(default_factory=list)


@dataclass
class UpstreamImage:
    image: Image.Image
    seed: Optional[int]
    finish_reason: str
    request_id: Optional[str]
    data: bytes  # the encoded file as received
    mime: str


def _endpoint_for(job: Job, endpoint: str | None) -> tuple[str, Optional[str], bool]:
    """(endpoint, sd3 model or None, whether job.model was carried)."""
    name = (job.model or "").strip()
    if endpoint:
        model = SD3_LEGACY.get(name, name) if endpoint == "sd3" and SD3_LEGACY.get(name, name) in SD3_MODELS else None
        return endpoint, model, bool(model) or name in ("", endpoint)
    if name in ("core", "ultra"):
        return name, None, True
    if name == "sd3" or SD3_LEGACY.get(name, name) in SD3_MODELS:
        return "sd3", (SD3_LEGACY.get(name, name) if name != "sd3" else None), True
    # an init image needs an endpoint that takes one
    return ("sd3" if job.init_image is not None else "core"), None, not name


def job_to_upstream(job: Job, *, endpoint: str | None = None, accept: str = "application/json",
                    output_format: str | None = None) -> UpstreamPlan:
    """The v2beta calls a client of the real service would make for `job`.

    A job that came from this dialect (job.extra["stability_v2"]) is sent with its original fields. Otherwise:
    `job.model` picks the endpoint ("core", "ultra", "sd3", an SD3 model name; else `endpoint` or core), the size
    becomes the nearest aspect ratio, `init_image` makes an sd3 image-to-image (or ultra) call with
    `denoising_strength` as `strength`, and each image of the job is one call with seed + i."""
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise InvalidRequest(f"unknown v2beta endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}")
    origin = job.extra.get("stability_v2") if isinstance(job.extra, dict) else None
    dropped: list[str] = []
    notes: list[str] = []
    defaults = Job()
    if origin:
        ep = endpoint or origin.get("endpoint", "core")
        fields = {k: str(v) for k, v in origin.get("fields", {}).items() if v is not None and k != "seed"}
        model = fields.get("model")
        carried_model = True
    else:
        ep, model, carried_model = _endpoint_for(job, endpoint)
        fields = {"prompt": job.prompt}
        if job.negative_prompt:
            fields["negative_prompt"] = job.negative_prompt
        if job.init_image is None or ep == "core":
            aspect = nearest_aspect_ratio(job.width, job.height)
            fields["aspect_ratio"] = aspect
            if (job.width, job.height) != ENDPOINT_SIZES[ep][aspect]:
                dropped += ["width", "height"]
                notes.append(f"size {job.width}x{job.height} sent as aspect_ratio {aspect} "
                             f"(upstream makes {'x'.join(map(str, ENDPOINT_SIZES[ep][aspect]))})")
        if model:
            fields["model"] = model
        if ep == "sd3":
            if 1 <= job.cfg_scale <= 10:
                fields["cfg_scale"] = f"{job.cfg_scale:g}"
            else:
                dropped.append("cfg_scale")
        elif job.cfg_scale != defaults.cfg_scale:
            dropped.append("cfg_scale")
        for name in _NOT_CARRIED:
            if getattr(job, name) != getattr(defaults, name):
                dropped.append(name)
        if not carried_model:
            dropped.append("model")
    if output_format:
        fields["output_format"] = output_format
    files: dict[str, tuple[str, bytes, str]] = {}
    if job.init_image is not None:
        if ep == "core":
            dropped += ["init_image", "denoising_strength"]
        else:
            buf = io.BytesIO()
            job.init_image.convert("RGB").save(buf, format="PNG")
            files["image"] = ("image.png", buf.getvalue(), "image/png")
            fields["strength"] = f"{min(1.0, max(0.0, job.denoising_strength)):g}"
            if ep == "sd3":
                fields["mode"] = "image-to-image"
                fields.pop("aspect_ratio", None)
    elif ep == "sd3" and fields.get("mode") == "image-to-image":
        fields["mode"] = "text-to-image"  # the image did not travel with the job
    if not files:
        files["none"] = ("none", b"", "application/octet-stream")  # the official sample's multipart trick

    requests = []
    for i in range(max(1, job.image_count)):
        seed = 0 if job.seed is None or job.seed < 0 else int(job.seed) + i
        if seed > MAX_SEED:
            if "seed" not in dropped:
                dropped.append("seed")
            seed = 0
        requests.append(UpstreamRequest(
            path=PATH.format(endpoint=ep), fields={**fields, "seed": str(seed)}, files=dict(files),
            headers={"accept": accept},
        ))
    return UpstreamPlan(endpoint=ep, requests=requests, dropped=sorted(set(dropped), key=dropped.index), notes=notes)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def upstream_error(status: int, headers: Mapping[str, str], content: bytes) -> SdgateError:
    """An upstream error answer → an SdgateError carrying the upstream status, name and message.

    Understands v2beta `{id, name, errors[]}`, v1 `{id, name, message}`, gateway `{error: {message, type, code}}`
    and `{message}` bodies; anything else keeps a short excerpt of the text."""
    name, errors, request_id = None, [], _header(headers, "x-request-id")
    try:
        body = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict):
        request_id = body.get("id") if isinstance(body.get("id"), str) else request_id
        name = body.get("name") if isinstance(body.get("name"), str) else None
        if isinstance(body.get("errors"), list):
            errors = [str(e) for e in body["errors"]]
        elif isinstance(body.get("error"), dict):
            err = body["error"]
            errors = [str(err.get("message") or err)]
            name = name or (str(err.get("code") or err.get("type") or "") or None)
        elif body.get("message") or body.get("messege"):
            errors = [str(body.get("message") or body.get("messege"))]
    if not errors:
        text = content[:300].decode("utf-8", errors="replace").strip()
        errors = [text or f"upstream answered HTTP {status}"]
    name = name or NAME_BY_STATUS.get(status, "upstream_error")
    message = "; ".join(errors)
    if status in (400, 413, 422):
        err: SdgateError = InvalidRequest(message)
    elif status == 404:
        err = ModelNotFound(message)
    elif status in (429, 503):
        err = QueueFull(message)
    elif status >= 500:
        err = GenerationFailed(message)
    else:
        err = SdgateError(message)
    retry_after = _header(headers, "retry-after")
    err.status, err.code = status, name
    err.details = {
        "upstream_status": status, "name": name, "errors": errors, "request_id": request_id,
        "retryable": status in (408, 429, 500, 502, 503, 504),
        # upstream documents a 60 s time-out after a rate-limit error and sends no Retry-After
        "retry_after": float(retry_after) if retry_after and retry_after.isdigit() else (60.0 if status == 429 else None),
    }
    return err


def parse_upstream_response(status: int, headers: Mapping[str, str], content: bytes) -> UpstreamImage:
    """A v2beta answer → the image with its seed and finish reason; raises the mapped SdgateError on an error.
    Image bytes are never decoded as text."""
    if status != 200:
        raise upstream_error(status, headers, content)
    ctype = (_header(headers, "content-type") or "").lower()
    request_id = _header(headers, "x-request-id")
    if ctype.startswith("application/json"):
        try:
            body = json.loads(content.decode("utf-8"))
            data = base64.b64decode(body["image"], validate=False)
            reason = str(body.get("finish_reason") or "SUCCESS")
            seed = body.get("seed")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as e:
            raise GenerationFailed(f"upstream sent an unreadable JSON answer ({type(e).__name__})") from None
        mime = ctype.partition("type=")[2].split(";")[0].strip() or "image/png"
    else:
        data = content
        reason = _header(headers, "finish-reason") or "SUCCESS"
        seed = _header(headers, "seed")
        mime = ctype.split(";")[0].strip() or "image/png"
    try:
        image = open_image(data)
    except UnreadableImage as e:
        raise GenerationFailed(f"upstream sent no readable image ({e})") from None
    try:
        seed_value = int(seed) if seed is not None and str(seed).strip() != "" else None
    except (TypeError, ValueError):
        seed_value = None
    return UpstreamImage(image=image, seed=seed_value, finish_reason=reason, request_id=request_id, data=data,
                         mime=mime)


def upstream_to_result(job: Job, images: list[UpstreamImage], *, plan: UpstreamPlan | None = None,
                       gateway: str = "") -> Result:
    """The parsed answers of a plan → a Result (seeds as upstream reported them; the plan's dropped fields and
    any CONTENT_FILTERED images in the notes)."""
    endpoint = plan.endpoint if plan else "core"
    model = (plan.requests[0].fields.get("model") if plan and plan.requests else None) or endpoint
    notes = []
    if plan and plan.dropped:
        notes.append(f"stability v2beta cannot carry: {', '.join(plan.dropped)}")
    notes += plan.notes if plan else []
    seeds = []
    for i, item in enumerate(images):
        seeds.append(item.seed if item.seed is not None else (job.seed + i if job.seed >= 0 else -1))
        if item.finish_reason != "SUCCESS":
            notes.append(f"content filtered: image {i}" if item.finish_reason == "CONTENT_FILTERED"
                         else f"image {i}: finish reason {item.finish_reason}")
    info = ModelInfo(name=model, title=f"{model} (stability v2beta{' @ ' + gateway if gateway else ''})",
                     source=gateway or "stability-v2beta", kind="remote")
    return Result(
        job=job, images=[item.image for item in images], seeds=seeds, model=info, sampler=job.sampler,
        schedule=job.schedule or "Automatic", scheduler_class="remote", notes=notes, finished_at=time.time(),
    )

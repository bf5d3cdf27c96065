"""The Stability AI REST v1 dialect (reference/hosted_apis.md §A; seeds 000 and 001): text-to-image, image-to-image
and masking for the v1 engines, the engines/account/balance endpoints, v1's `{id, name, message}` errors, and the
reverse pair the relay uses to speak v1 to a remote gateway.

Nothing outside this module knows v1's field names; webui/routes/stability_v1.py only binds paths to
`StabilityV1Api` methods. Decisions the reference leaves to us, made here:
- weights become A1111 emphasis in the Job prompt: `{"text": "a cat", "weight": 1.5}` → `(a cat:1.5)`; positive
  prompts are joined with ", ", negative-weight prompts become the negative prompt with |weight|; a weight of 0
  drops the prompt. A1111 syntax inside a text is interpreted too (a superset of v1: plain text stays plain,
  except for brackets), which also makes Job → v1 → Job exact through this server.
- `seed` 0 or absent draws a random seed in 1..4294967295; sample i uses seed + i, and every artifact reports
  its own seed.
- omitted width/height take the engine's default (1024x1024 on the SDXL 1.0/0.9 engines, 768x768 on the 768
  engine, 512x512 otherwise), so an omitted size never fails the engine's own rule.
- `steps` is 10..50 (the current upstream). `[stability_v1] lenient = true` takes the old 10..150 range and
  clamps values outside it instead of rejecting them.
- `clip_guidance_preset`, `step_schedule_end` and `extras` are accepted and have no local effect.
- an engine id that is not one of Stability's but names a local model (e.g. `tiny-sd1`) is served too, with the
  generic rule (multiples of 64, 128 px up to the server's limits).
- a full queue answers 429 `rate_limit_exceeded` with Retry-After (v1's "busy").
- the Authorization header is always required (401 "missing authorization header", as upstream); with no keys
  configured any key is accepted from loopback clients (backends/keys.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import random
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional
from urllib.parse import quote

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..images import UnreadableImage, encode_image, open_image
from . import PerService
from ..job import (
    GenerationFailed,
    InvalidRequest,
    Job,
    ModelInfo,
    ModelNotFound,
    QueueFull,
    Result,
    SdgateError,
)
from ..infotext import checkpoint_short_name, create_infotext
from ..keys import bearer_token
from ..styles import StyleStore
from ..styles import styles_path as configured_styles_path

log = logging.getLogger(__name__)

SOURCE = "stability_v1"
KEY_STYLE = "stability"

MAX_SEED = 4294967295  # uint32
STEPS_STRICT = (10, 50)
STEPS_LENIENT = (10, 150)
DEFAULT_STEPS = 30
DEFAULT_CFG = 7.0
DEFAULT_SAMPLER = "K_DPMPP_2M"  # "server picks" upstream
DEFAULT_IMAGE_STRENGTH = 0.35
DEFAULT_STEP_SCHEDULE_START = 0.65
LOCAL_CREDITS = 1_000_000.0  # local generation costs nothing; clients that check for credits > 0 go ahead
RETRY_AFTER_BUSY = 5  # seconds, on a full queue

# ------------------------------------------------------------------------------------------------ tables

SAMPLERS = Literal[
    "DDIM", "DDPM", "K_DPMPP_2M", "K_DPMPP_2S_ANCESTRAL", "K_DPM_2", "K_DPM_2_ANCESTRAL", "K_EULER",
    "K_EULER_ANCESTRAL", "K_HEUN", "K_LMS",
]
STYLE_PRESETS = Literal[
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic", "pixel-art",
    "tile-texture",
]
CLIP_GUIDANCE_PRESETS = Literal["FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"]
FINISH_REASONS = ("SUCCESS", "ERROR", "CONTENT_FILTERED")

SDXL_V1_SIZES = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344), (1536, 640),
    (640, 1536),
)


@dataclass(frozen=True)
class SizeRule:
    """What sizes an engine takes, and the error `name` a violation answers with."""

    error: str
    pairs: tuple[tuple[int, int], ...] = ()  # an exact whitelist of (width, height)
    side: tuple[int, int] | None = None  # each side within [min, max]
    pixels: tuple[int, int] | None = None  # width × height within [min, max]
    one_side_over: int | None = None  # at most one side may exceed this


@dataclass(frozen=True)
class Engine:
    id: str
    name: str
    description: str
    rule: SizeRule
    default_size: tuple[int, int]


SDXL_V1_RULE = SizeRule("invalid_sdxl_v1_dimensions", pairs=SDXL_V1_SIZES)
SD16_RULE = SizeRule("invalid_height_or_width", side=(320, 1536))
BETA_RULE = SizeRule("invalid_sdxl_v222_dimensions", side=(128, 896), one_side_over=512)
PIXELS_512_RULE = SizeRule("invalid_pixel_count", pixels=(262_144, 1_048_576))
PIXELS_768_RULE = SizeRule("invalid_pixel_count", pixels=(589_824, 1_048_576))

ENGINES: dict[str, Engine] = {
    e.id: e
    for e in (
        Engine("stable-diffusion-xl-1024-v1-0", "Stable Diffusion XL v1.0",
               "Stability-AI Stable Diffusion XL v1.0", SDXL_V1_RULE, (1024, 1024)),
        Engine("stable-diffusion-xl-1024-v0-9", "Stable Diffusion XL v0.9",
               "Stability-AI Stable Diffusion XL v0.9", SDXL_V1_RULE, (1024, 1024)),
        Engine("stable-diffusion-v1-6", "Stable Diffusion v1.6",
               "Stability-AI Stable Diffusion v1.6", SD16_RULE, (512, 512)),
        Engine("stable-diffusion-xl-beta-v2-2-2", "Stable Diffusion XL Beta v2.2.2",
               "Stability-AI Stable Diffusion XL Beta v2.2.2", BETA_RULE, (512, 512)),
        Engine("stable-diffusion-512-v2-1", "Stable Diffusion v2.1-base",
               "Stability-AI Stable Diffusion v2.1-base (512)", PIXELS_512_RULE, (512, 512)),
        Engine("stable-diffusion-768-v2-1", "Stable Diffusion v2.1",
               "Stability-AI Stable Diffusion v2.1 (768)", PIXELS_768_RULE, (768, 768)),
        Engine("stable-diffusion-v1-5", "Stable Diffusion v1.5",
               "Stability-AI Stable Diffusion v1.5", PIXELS_512_RULE, (512, 512)),
    )
}
# Relay default when a Job names no v1 engine: SDXL when its size is one of SDXL's, else SD 1.6.
DEFAULT_SDXL_ENGINE = "stable-diffusion-xl-1024-v1-0"
DEFAULT_SD_ENGINE = "stable-diffusion-v1-6"

# HTTP status → v1's generic error `name` (A.5). 429 is our decision (v1's spec has none).
STATUS_NAMES = {
    400: "bad_request", 401: "unauthorized", 403: "permission_denied", 404: "not_found",
    429: "rate_limit_exceeded", 500: "server_error",
}
SERVER_ERROR_MESSAGE = "An unexpected server error occurred, please try again."

# ------------------------------------------------------------------------------------------------ errors


class V1Error(SdgateError):
    """An error with its v1 `name` and status (a size rule, a missing image...)."""

    def __init__(self, status: int, name: str, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message, details=details)
        self.status = status
        self.code = name


def bad_request(message: str, name: str = "bad_request") -> V1Error:
    return V1Error(400, name, message)


def engine_not_found(engine_id: str) -> V1Error:
    return V1Error(404, "not_found", f"The specified engine (ID {engine_id}) was not found.")


def error_body(exc: BaseException) -> tuple[int, dict[str, str], dict[str, str]]:
    """(status, `{id, name, message}`, headers) for any exception. Our own errors keep their message; anything
    else is a 500 with upstream's generic message (the server log has the traceback)."""
    headers: dict[str, str] = {}
    if isinstance(exc, V1Error):
        status, name, message = exc.status, exc.code, exc.message
    elif isinstance(exc, QueueFull):
        status, name, message = 429, "rate_limit_exceeded", exc.message
        headers["Retry-After"] = str(RETRY_AFTER_BUSY)
    elif isinstance(exc, SdgateError):
        status = exc.status
        name = STATUS_NAMES.get(status) or ("server_error" if status >= 500 else "bad_request")
        message = exc.message
    else:
        status, name, message = 500, "server_error", SERVER_ERROR_MESSAGE
    return status, {"id": uuid.uuid4().hex, "name": name, "message": message}, headers


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_error(e: ValidationError) -> V1Error:
    """pydantic's errors → one 400 `bad_request` whose message names each field."""
    problems = [f"{_loc(err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)]
    return V1Error(400, "bad_request", "; ".join(problems), details={"problems": problems})


# ------------------------------------------------------------------------------------------- request models


class _V1Model(BaseModel):
    # Unknown keys are ignored (clients send fields of newer API versions); "7" → 7 as upstream's JSON decoding.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPrompt(_V1Model):
    text: str = Field(max_length=2000)
    weight: Optional[float] = Field(None, description="1 when omitted; negative: a negative prompt")


class GenerationParams(_V1Model):
    """The optional parameters every generation route takes (v1's GenerationRequestOptionalParams)."""

    cfg_scale: Optional[float] = Field(None, ge=0, le=35, description="default 7")
    clip_guidance_preset: Optional[CLIP_GUIDANCE_PRESETS] = Field(None, description="accepted; no local effect")
    sampler: Optional[SAMPLERS] = Field(None, description=f"omitted: {DEFAULT_SAMPLER}")
    samples: Optional[int] = Field(None, ge=1, le=10, description="default 1")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="0 or omitted: random")
    steps: Optional[int] = Field(None, description="10..50, default 30")
    style_preset: Optional[STYLE_PRESETS] = None
    extras: Optional[dict[str, Any]] = Field(None, description="accepted and ignored")


class TextToImageRequest(GenerationParams):
    text_prompts: list[TextPrompt] = Field(min_length=1)
    height: Optional[int] = Field(None, description="multiple of 64; omitted: the engine's default")
    width: Optional[int] = Field(None, description="multiple of 64; omitted: the engine's default")


class ImageToImageRequest(GenerationParams):
    """The multipart fields of image-to-image besides `init_image` (indexed `text_prompts[i][text]` keys are
    gathered into `text_prompts` first)."""

    text_prompts: list[TextPrompt] = Field(min_length=1)
    init_image_mode: Optional[Literal["IMAGE_STRENGTH", "STEP_SCHEDULE"]] = None
    image_strength: Optional[float] = Field(None, ge=0, le=1, description="default 0.35")
    step_schedule_start: Optional[float] = Field(None, ge=0, le=1, description="default 0.65")
    step_schedule_end: Optional[float] = Field(None, ge=0, le=1, description="accepted; no local effect")


class MaskingRequest(GenerationParams):
    text_prompts: list[TextPrompt] = Field(min_length=1)
    mask_source: Literal["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA"]


class Artifact(BaseModel):
    base64: str
    finishReason: str
    seed: int


class GenerationResponse(BaseModel):
    artifacts: list[Artifact]


class EngineItem(BaseModel):
    id: str
    name: str
    description: str
    type: str


class ErrorResponse(BaseModel):
    id: str
    name: str
    message: str


_TEXT_PROMPT_KEY = re.compile(r"^text_prompts\[(\d+)\]\[(\w+)\]$")


def form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Multipart text fields → the dict a request model validates. `text_prompts[i][text|weight]` keys become a
    list ordered by index (a repeated key overrides); empty values count as absent; files are left out."""
    prompts: dict[int, dict[str, str]] = {}
    fields: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(value, str):
            continue
        m = _TEXT_PROMPT_KEY.match(key)
        if m:
            prompts.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key.startswith("extras"):
            continue  # experimental pass-through: ignored
        elif value.strip() != "":
            fields[key] = value
    if prompts:
        fields["text_prompts"] = [
            {k: v for k, v in prompts[i].items() if k == "text" or v.strip() != ""} for i in sorted(prompts)
        ]
    return fields


# ------------------------------------------------------------------------------------------- size rules


def rule_for(engine_id: str, max_side: int = 2048) -> SizeRule:
    engine = ENGINES.get(engine_id)
    return engine.rule if engine else SizeRule("invalid_height_or_width", side=(128, max_side))


def check_size(engine_id: str, width: int, height: int, *, max_side: int = 2048, what: str = "") -> None:
    """Raise the engine's v1 error when width×height breaks its rule (every engine wants multiples of 64)."""
    got = f"{width}x{height}"
    prefix = f"{what}: " if what else ""
    if width % 64 or height % 64 or width < 64 or height < 64:
        raise bad_request(f"{prefix}height and width must be multiples of 64 (received {got})",
                          "invalid_height_or_width")
    rule = rule_for(engine_id, max_side)
    if rule.pairs and (width, height) not in rule.pairs:
        engines = " and ".join(sorted(e.id for e in ENGINES.values() if e.rule is rule)) or engine_id
        allowed = ", ".join(f"{w}x{h}" for w, h in rule.pairs)
        raise bad_request(
            f"{prefix}for the engines {engines}, the allowed dimensions are {allowed}, but we received {got}",
            rule.error,
        )
    if rule.side:
        lo, hi = rule.side
        if not (lo <= width <= hi and lo <= height <= hi):
            raise bad_request(
                f"{prefix}for the engine {engine_id}, each side must be between {lo} and {hi} pixels, "
                f"but we received {got}",
                rule.error,
            )
    if rule.one_side_over and width > rule.one_side_over and height > rule.one_side_over:
        raise bad_request(
            f"{prefix}for the engine {engine_id}, only one side may be larger than {rule.one_side_over} pixels "
            f"(at most 512x896 or 896x512), but we received {got}",
            rule.error,
        )
    if rule.pixels:
        lo, hi = rule.pixels
        if not lo <= width * height <= hi:
            raise bad_request(
                f"{prefix}for the engine {engine_id}, width × height must be between {lo} and {hi} pixels, "
                f"but we received {got} ({width * height})",
                rule.error,
            )


def default_size(engine_id: str, family: str | None = None) -> tuple[int, int]:
    engine = ENGINES.get(engine_id)
    if engine:
        return engine.default_size
    return (1024, 1024) if family == "sdxl" else (512, 512)


# ----------------------------------------------------------------------------------- request → Job parts


def _fmt_weight(weight: float) -> str:
    return f"{weight:.4f}".rstrip("0").rstrip(".")


def _weighted(text: str, weight: float) -> str:
    return text if weight == 1 else f"({text}:{_fmt_weight(weight)})"


def prompts_to_text(prompts: list[TextPrompt]) -> tuple[str, str]:
    """text_prompts → (prompt, negative prompt) in A1111 emphasis syntax (see the module docstring)."""
    positive, negative = [], []
    for p in prompts:
        weight = 1.0 if p.weight is None else float(p.weight)
        text = p.text.strip()
        if not text or weight == 0:
            continue
        if weight > 0:
            positive.append(_weighted(text, weight))
        else:
            negative.append(_weighted(text, -weight))
    return ", ".join(positive), ", ".join(negative)


def resolve_steps(steps: int | None, lenient: bool) -> int:
    if steps is None:
        return DEFAULT_STEPS
    if lenient:
        lo, hi = STEPS_LENIENT
        return min(hi, max(lo, steps))
    lo, hi = STEPS_STRICT
    if not lo <= steps <= hi:
        raise bad_request(f"steps: must be between {lo} and {hi} (received {steps})")
    return steps


def resolve_seed(seed: int | None, samples: int) -> int:
    """0/None → a random seed in 1..MAX_SEED that leaves room for seed + i (0 never reaches the client)."""
    if seed:
        return seed
    return random.randint(1, MAX_SEED - (samples - 1))


def wants_png(accept: str | None) -> bool:
    """`Accept: image/png` (or image/*) first → PNG; blank, application/json, */* or anything else → JSON."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("image/png", "image/*"):
            return True
        if media in ("application/json", "application/*"):
            return False
    return False


def _open_image(data: bytes, field_name: str) -> Image.Image:
    try:
        return open_image(data)
    except UnreadableImage as e:
        raise bad_request(f"{field_name}: not a readable PNG, JPEG or WebP image ({e})", "invalid_mime_type") from None


def read_image(value: Any, field_name: str) -> Image.Image:
    """A multipart file part (bytes) or, tolerated, a base64 string → a loaded PIL image."""
    if value is None or (isinstance(value, (bytes, str)) and not value):
        raise bad_request(f"{field_name}: is required")
    if isinstance(value, str):
        text = re.sub(r"^data:[^,]*,", "", value.strip())
        try:
            value = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{field_name}: expected an image file", "invalid_mime_type") from None
    return _open_image(value, field_name)


def mask_from(source: str, init: Image.Image, mask_image: Image.Image | None) -> Image.Image:
    """v1's mask_source → the Job's mask (L, white = repaint)."""
    if source == "INIT_IMAGE_ALPHA":
        if "A" not in init.getbands() and not (init.mode == "P" and "transparency" in init.info):
            raise bad_request("init_image: has no alpha channel to use as the mask (INIT_IMAGE_ALPHA)",
                              "invalid_mask_image")
        # transparent pixels are replaced, opaque ones kept
        return ImageOps.invert(init.convert("RGBA").getchannel("A"))
    if mask_image is None:
        raise bad_request(f"mask_image: is required when mask_source is {source}", "invalid_mask_image")
    if mask_image.size != init.size:
        raise bad_request(
            f"mask_image: must be the same size as init_image ({init.width}x{init.height}), "
            f"received {mask_image.width}x{mask_image.height}",
            "invalid_image_dimensions",
        )
    mask = mask_image.convert("L")
    return mask if source == "MASK_IMAGE_WHITE" else ImageOps.invert(mask)


# ----------------------------------------------------------------------------------- Result → response


@dataclass
class Reply:
    """What a route sends: a JSON body, or raw image bytes with v1's PNG-mode headers."""

    content: Any
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def finish_reasons(result: Result) -> list[str]:
    # An interrupted run returns half-denoised images: upstream would call those failures.
    reason = "ERROR" if result.interrupted else "SUCCESS"
    return [reason] * len(result.images)


def _infotext(job: Job, result: Result, seed: int, engine_id: str) -> str:
    params = {
        "Steps": job.steps,
        "Sampler": result.sampler,
        "Schedule type": result.schedule,
        "CFG scale": job.cfg_scale,
        "Seed": seed,
        "Size": f"{job.width}x{job.height}",
        "Model hash": result.model.hash,
        "Model": checkpoint_short_name(result.model),
        "Denoising strength": job.denoising_strength if job.init_image is not None else None,
        "Stability engine": engine_id,
    }
    return create_infotext(job.prompt, job.negative_prompt, params)


def encode_pngs(job: Job, result: Result, engine_id: str, composite: tuple[Image.Image, Image.Image] | None = None
                ) -> list[bytes]:
    """Each image as PNG with its generation parameters in the `parameters` chunk (readable by PNG-info).
    `composite` = (init, mask): pixels outside the mask are the init image's, as v1's masking promises."""
    out = []
    for image, seed in zip(result.images, result.seeds):
        if composite is not None:
            init, mask = composite
            image = Image.composite(image.convert("RGB"), init.convert("RGB"), mask.convert("L"))
        out.append(encode_image(image, "png", _infotext(job, result, seed, engine_id)))
    return out


def to_reply(pngs: list[bytes], result: Result, png_mode: bool) -> Reply:
    reasons = finish_reasons(result)
    if png_mode:
        if not pngs:
            raise V1Error(500, "server_error", "the generation was interrupted before any image was made")
        return Reply(pngs[0], "image/png", {"Finish-Reason": reasons[0], "Seed": str(result.seeds[0])})
    artifacts = [
        {"base64": base64.b64encode(png).decode("ascii"), "finishReason": reason, "seed": seed}
        for png, reason, seed in zip(pngs, reasons, result.seeds)
    ]
    return Reply({"artifacts": artifacts})


# ------------------------------------------------------------------------------------------------ the API


@dataclass
class _Prepared:
    job: Job
    engine_id: str
    png: bool
    composite: tuple[Image.Image, Image.Image] | None = None


class StabilityV1Api(PerService):
    """What each v1 route does, over a Service (the routes and the UI tab share one instance)."""

    def __init__(self, service, *, styles_path: Path | None = None):
        self.service = service
        self.config = service.config
        section = (getattr(self.config, "raw", None) or {}).get("stability_v1") or {}
        self.lenient = bool(section.get("lenient", False))
        self.styles = StyleStore(styles_path or configured_styles_path(self.config.raw, "stability_v1"))
        limits = getattr(self.config, "limits", None)
        self.max_side = min(getattr(limits, "max_width", 2048), getattr(limits, "max_height", 2048))

    # ------------------------------------------------------------------ auth and engines

    def authorize(self, authorization: str | None, client_host: str | None) -> None:
        if not authorization or not authorization.strip():
            raise V1Error(401, "unauthorized", "missing authorization header")
        keys = self.service.keys
        if not keys.allows(KEY_STYLE, bearer_token(authorization), client_host):
            if keys.configured(KEY_STYLE):
                message = "invalid API key"
            else:
                message = "this server has no Stability API keys configured and answers loopback clients only"
            raise V1Error(401, "unauthorized", message)

    def resolve_engine(self, engine_id: str) -> ModelInfo:
        try:
            return self.service.models.resolve(engine_id)
        except ModelNotFound:
            raise engine_not_found(engine_id) from None

    async def engines(self) -> list[dict[str, str]]:
        def listing():
            rows = []
            for engine in ENGINES.values():
                try:
                    self.service.models.resolve(engine.id)
                except ModelNotFound:
                    continue
                rows.append({"id": engine.id, "name": engine.name, "description": engine.description,
                             "type": "PICTURE"})
            return rows

        return await asyncio.to_thread(listing)

    def account(self) -> dict[str, Any]:
        return {
            "id": "user-local",
            "email": "local@sdgate.invalid",
            "profile_picture": None,
            "organizations": [{"id": "org-local", "name": "sdgate (local)", "role": "OWNER", "is_default": True}],
        }

    def balance(self) -> dict[str, float]:
        return {"credits": LOCAL_CREDITS}

    # ------------------------------------------------------------------ request → Job

    def _base_job(self, engine_id: str, info: ModelInfo, req: GenerationParams, width: int, height: int) -> Job:
        from ..local.samplers import resolve_sampler

        prompt, negative = prompts_to_text(req.text_prompts)
        if req.style_preset:
            prompt, negative = self.styles.apply(prompt, negative, [req.style_preset])
        samples = req.samples or 1
        sampler = req.sampler or DEFAULT_SAMPLER
        resolve_sampler(sampler)  # the enum is in the sampler table; fail before queueing if that ever changes
        if req.clip_guidance_preset not in (None, "NONE"):
            log.debug("clip_guidance_preset %s has no local equivalent; ignored", req.clip_guidance_preset)
        return Job(
            prompt=prompt,
            negative_prompt=negative,
            width=width,
            height=height,
            steps=resolve_steps(req.steps, self.lenient),
            cfg_scale=DEFAULT_CFG if req.cfg_scale is None else float(req.cfg_scale),
            sampler=sampler,
            seed=resolve_seed(req.seed, samples),
            batch_size=samples,
            n_iter=1,
            model=info.title,
            prompt_weighting=True,
            source=SOURCE,
            extra={"engine_id": engine_id, "task": "txt2img"},
        )

    def _validate(self, job: Job) -> None:
        engine = getattr(self.service, "engine", None)
        if engine is not None and hasattr(engine, "validate"):
            engine.validate(job)

    @staticmethod
    def _check_png_samples(png: bool, samples: int | None) -> None:
        if png and (samples or 1) > 1:
            raise bad_request(
                f"samples: must be 1 when the Accept header is image/png (received {samples}); "
                "use Accept: application/json for several images",
                "invalid_samples",
            )

    def prepare_text_to_image(self, engine_id: str, body: bytes | str | dict, accept: str | None) -> _Prepared:
        info = self.resolve_engine(engine_id)
        req = parse_json(TextToImageRequest, body)
        png = wants_png(accept)
        self._check_png_samples(png, req.samples)
        w0, h0 = default_size(engine_id, info.family)
        width = w0 if req.width is None else req.width
        height = h0 if req.height is None else req.height
        check_size(engine_id, width, height, max_side=self.max_side)
        job = self._base_job(engine_id, info, req, width, height)
        self._validate(job)
        return _Prepared(job, engine_id, png)

    def prepare_image_to_image(self, engine_id: str, items: list[tuple[str, Any]], accept: str | None,
                               masking: bool = False) -> _Prepared:
        info = self.resolve_engine(engine_id)
        files = {k: v for k, v in items if isinstance(v, (bytes, bytearray))}
        fields = form_fields(items)
        for name in ("init_image", "mask_image"):  # a base64 text part is tolerated in place of a file
            if name not in files and isinstance(fields.get(name), str):
                files[name] = fields.pop(name)
        try:
            req = (MaskingRequest if masking else ImageToImageRequest).model_validate(fields)
        except ValidationError as e:
            raise validation_error(e) from None
        png = wants_png(accept)
        self._check_png_samples(png, req.samples)
        init = read_image(files.get("init_image"), "init_image")
        check_size(engine_id, init.width, init.height, max_side=self.max_side, what="init_image")
        job = self._base_job(engine_id, info, req, init.width, init.height)
        job.init_image = init.convert("RGB")
        composite = None
        if masking:
            mask_image = read_image(files["mask_image"], "mask_image") if files.get("mask_image") else None
            job.mask = mask_from(req.mask_source, init, mask_image)
            job.denoising_strength = 1.0  # masked pixels are replaced completely
            job.extra["task"] = "masking"
            composite = (job.init_image, job.mask)
        else:
            if req.init_image_mode == "STEP_SCHEDULE":
                start = DEFAULT_STEP_SCHEDULE_START if req.step_schedule_start is None else req.step_schedule_start
            else:  # IMAGE_STRENGTH, the default: step_schedule_start = 1 − image_strength
                strength = DEFAULT_IMAGE_STRENGTH if req.image_strength is None else req.image_strength
                start = 1.0 - strength
            job.denoising_strength = float(start)
            job.extra["task"] = "img2img"
        self._validate(job)
        return _Prepared(job, engine_id, png, composite)

    # ------------------------------------------------------------------ running

    async def run(self, prepared: _Prepared) -> Reply:
        result = await self.service.run_async(prepared.job)
        pngs = await asyncio.to_thread(encode_pngs, prepared.job, result, prepared.engine_id, prepared.composite)
        return to_reply(pngs, result, prepared.png)

    async def text_to_image(self, engine_id: str, body: bytes | str | dict, accept: str | None = None) -> Reply:
        prepared = await asyncio.to_thread(self.prepare_text_to_image, engine_id, body, accept)
        return await self.run(prepared)

    async def image_to_image(self, engine_id: str, items: list[tuple[str, Any]], accept: str | None = None,
                             masking: bool = False) -> Reply:
        prepared = await asyncio.to_thread(self.prepare_image_to_image, engine_id, items, accept, masking)
        return await self.run(prepared)


def parse_json(model: type[BaseModel], body: bytes | str | dict) -> Any:
    """A JSON body → the request model, or a 400 `bad_request` naming each bad field."""
    try:
        if isinstance(body, dict):
            return model.model_validate(body)
        if not body or not (body.strip() if isinstance(body, (bytes, str)) else body):
            raise bad_request("request body: is required (a JSON object)")
        return model.model_validate_json(body)
    except ValidationError as e:
        raise validation_error(e) from None


# ============================================================================ reverse pair: Job ⇄ v1 upstream


@dataclass
class UpstreamRequest:
    """One v1 call as a client of the real service would make it. `path` starts with /v1 (a gateway's prefix,
    e.g. /sd, goes in front). For httpx: `json=` when `json` is set, else `data=` + `files=` (multipart)."""

    method: str
    path: str
    headers: dict[str, str]
    engine_id: str
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    sampler: str | None = None  # the v1 sampler sent (None: upstream picks)
    not_carried: list[str] = field(default_factory=list)  # Job fields v1 cannot express (names)
    notes: list[str] = field(default_factory=list)  # what was changed or dropped, in words

    def httpx_kwargs(self, prefix: str = "") -> dict[str, Any]:
        """Arguments for `httpx.Client.request(**...)`; `prefix` is the gateway's path prefix (e.g. "/sd")."""
        kwargs: dict[str, Any] = {"method": self.method, "url": prefix.rstrip("/") + self.path,
                                  "headers": dict(self.headers)}
        if self.json is not None:
            kwargs["json"] = self.json
        else:
            kwargs["data"], kwargs["files"] = self.data, self.files
        return kwargs


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _v1_sampler(job: Job) -> str | None:
    from ..local.samplers import STABILITY_SAMPLERS, resolve_sampler

    if job.sampler in STABILITY_SAMPLERS:
        return job.sampler
    try:
        used = resolve_sampler(job.sampler).name
    except SdgateError:
        return None
    by_row = {row: enum for enum, row in STABILITY_SAMPLERS.items()}
    return by_row.get(used)


def pick_engine(job: Job, engine_id: str | None = None) -> str:
    if engine_id:
        return engine_id
    if job.model in ENGINES:
        return job.model
    return DEFAULT_SDXL_ENGINE if (job.width, job.height) in SDXL_V1_SIZES else DEFAULT_SD_ENGINE


def job_to_request(job: Job, engine_id: str | None = None, *, accept: str = "application/json") -> UpstreamRequest:
    """The v1 request for `job` (the relay's Job → v1). Fields v1 cannot carry are listed in `not_carried` with
    a note each; sizes are checked against the engine's rule here (an InvalidRequest, before any network)."""
    engine = pick_engine(job, engine_id)
    not_carried: list[str] = []
    notes: list[str] = []

    def drop(name: str, why: str) -> None:
        not_carried.append(name)
        notes.append(f"{name}: {why}")

    text_prompts: list[dict[str, Any]] = [{"text": job.prompt, "weight": 1.0}]
    if job.negative_prompt.strip():
        text_prompts.append({"text": job.negative_prompt, "weight": -1.0})
    if not job.prompt_weighting and re.search(r"[()\[\]]", job.prompt + job.negative_prompt):
        drop("prompt_weighting", "v1 has no switch for emphasis; brackets are sent as they are")

    samples = job.image_count
    if samples > 10:
        drop("batch_size", f"v1 makes at most 10 samples per request; asked {samples}, sent 10")
        samples = 10
    steps = min(STEPS_STRICT[1], max(STEPS_STRICT[0], job.steps))
    if steps != job.steps:
        drop("steps", f"v1 takes 10..50 steps; sent {steps} for {job.steps}")
    cfg = min(35.0, max(0.0, float(job.cfg_scale)))
    if cfg != job.cfg_scale:
        drop("cfg_scale", f"v1 takes cfg_scale 0..35; sent {cfg:g}")
    if 1 <= job.seed <= MAX_SEED:
        seed = job.seed
    else:
        seed = 0
        if job.seed >= 0:  # -1 is "random" in both styles; 0 and > uint32 cannot be asked of v1
            drop("seed", f"v1 seeds are 1..{MAX_SEED} (0 means random); {job.seed} sent as random")
    sampler = _v1_sampler(job)
    if sampler is None:
        drop("sampler", f"{job.sampler!r} has no v1 equivalent; upstream picks")
    if job.schedule and job.schedule.lower() not in ("automatic", ""):
        drop("schedule", f"v1 has no schedule type; {job.schedule!r} not sent")
    if job.clip_skip not in (None, 1):
        drop("clip_skip", "v1 has no clip skip")
    if job.loras:
        drop("loras", "v1 has no LoRAs")
    if "<lora:" in job.prompt:
        drop("loras", "v1 has no LoRAs; <lora:...> tags are sent as text")
    if job.eta not in (None, 0, 0.0):
        drop("eta", "v1 has no eta")
    if job.mask_crop_padding is not None:
        drop("mask_crop_padding", "v1 masking has no 'only masked' mode")

    png = wants_png(accept) and samples == 1
    base = f"/v1/generation/{quote(engine, safe='')}"  # a local model title may hold spaces or brackets
    headers = {"Accept": "image/png" if png else "application/json"}
    params: dict[str, Any] = {"cfg_scale": cfg, "samples": samples, "seed": seed, "steps": steps}
    if sampler:
        params["sampler"] = sampler

    if job.init_image is None:
        check_size(engine, job.width, job.height)
        headers["Content-Type"] = "application/json"
        body = {"text_prompts": text_prompts, "height": job.height, "width": job.width, **params}
        return UpstreamRequest("POST", f"{base}/text-to-image", headers, engine, json=body,
                               sampler=sampler, not_carried=list(dict.fromkeys(not_carried)), notes=notes)

    # image-to-image: v1 makes the init image's size, so the init goes up at the Job's size
    check_size(engine, job.width, job.height)
    init = job.init_image.convert("RGB").resize((job.width, job.height), Image.LANCZOS)
    data = {f"text_prompts[{i}][{k}]": str(v) for i, p in enumerate(text_prompts) for k, v in p.items()}
    data.update({k: str(v) for k, v in params.items()})
    files = {"init_image": ("init_image.png", _png_bytes(init), "image/png")}
    if job.mask is None:
        path = f"{base}/image-to-image"
        data["init_image_mode"] = "IMAGE_STRENGTH"
        data["image_strength"] = f"{1.0 - float(job.denoising_strength):.6g}"
    else:
        path = f"{base}/image-to-image/masking"
        data["mask_source"] = "MASK_IMAGE_WHITE"
        mask = job.mask.convert("L").resize((job.width, job.height), Image.LANCZOS)
        files["mask_image"] = ("mask_image.png", _png_bytes(mask), "image/png")
        if job.denoising_strength < 1.0:
            drop("denoising_strength", "v1 masking always repaints the masked area completely")
    return UpstreamRequest("POST", path, headers, engine, data=data, files=files, sampler=sampler,
                           not_carried=list(dict.fromkeys(not_carried)), notes=notes)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def error_from_response(status: int, body: bytes | str | dict | None, headers: Mapping[str, str] | None = None
                        ) -> SdgateError:
    """An upstream error answer → an SdgateError subclass with the upstream status, name and message. Reads
    v1's `{id, name, message}` and, from gateways in front, `{error: {message, type, code}}` and `{message}`."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
    name, message, upstream_id = None, None, _header(headers, "x-request-id")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message, name = err.get("message"), err.get("code") or err.get("type")
        else:
            name, message = data.get("name"), data.get("message") or data.get("detail")
            upstream_id = data.get("id") or upstream_id
            if isinstance(message, (list, dict)):
                message = json.dumps(message)
    if not message:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        message = text.strip()[:300] or f"HTTP {status}"
    name = str(name or STATUS_NAMES.get(status) or ("server_error" if status >= 500 else "bad_request"))
    cls: type[SdgateError]
    if status == 404:
        cls = ModelNotFound
    elif status in (429, 503):
        cls = QueueFull
    elif 400 <= status < 500:
        cls = InvalidRequest
    else:
        cls = GenerationFailed
    exc = cls(f"{name}: {message}", details={"upstream_status": status, "upstream_name": name,
                                            "upstream_id": upstream_id})
    exc.status = status
    exc.code = name
    retry_after = _header(headers, "retry-after")
    if retry_after:
        exc.details["retry_after"] = retry_after
    return exc


def _artifact_list(data: Any) -> list[dict]:
    """`{"artifacts": [...]}`, tolerating the seeds' nested `[[...]]` and the spec's bare array."""
    items = data.get("artifacts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("no artifacts")
    flat: list = []
    for item in items:
        flat.extend(item if isinstance(item, list) else [item])
    if not all(isinstance(a, dict) for a in flat):
        raise ValueError("artifacts are not objects")
    return flat


def response_to_result(
    job: Job,
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes,
    *,
    request: UpstreamRequest | None = None,
    engine_id: str | None = None,
) -> Result:
    """A v1 answer (JSON artifacts, or PNG + Finish-Reason/Seed headers) → a Result; an error answer raises
    `error_from_response(...)`. ERROR artifacts are dropped with a note (all ERROR: GenerationFailed);
    CONTENT_FILTERED ones are kept with a note. Anything that is not a v1 answer is a 502."""
    if status >= 400:
        raise error_from_response(status, body, headers)
    engine = engine_id or (request.engine_id if request else None) or pick_engine(job)
    content_type = (_header(headers, "content-type") or "").split(";")[0].strip().lower()
    entries: list[tuple[bytes, str, int | None]] = []  # (png bytes, finish reason, seed)
    try:
        if content_type.startswith("image/") or body[:8] == b"\x89PNG\r\n\x1a\n":
            seed = _header(headers, "seed")
            entries.append((body, _header(headers, "finish-reason") or "SUCCESS", int(seed) if seed else None))
        else:
            for a in _artifact_list(json.loads(body)):
                raw = base64.b64decode(a.get("base64") or "", validate=False)
                entries.append((raw, str(a.get("finishReason") or "SUCCESS"), a.get("seed")))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        exc = GenerationFailed(f"upstream answered {status} with a body that is not a Stability v1 response ({e})")
        exc.status = 502
        raise exc from None

    notes = list(request.notes) if request else []
    images, seeds = [], []
    for i, (raw, reason, seed) in enumerate(entries):
        if reason == "ERROR":
            notes.append(f"upstream image {i} finished with ERROR; left out")
            continue
        if reason == "CONTENT_FILTERED":
            notes.append(f"upstream image {i} was CONTENT_FILTERED (blurred or blacked out)")
        try:
            image = open_image(raw)
        except UnreadableImage as e:
            exc = GenerationFailed(f"upstream image {i} cannot be decoded ({e})")
            exc.status = 502
            raise exc from None
        images.append(image)
        fallback = job.seed + i if job.seed >= 0 else -1
        seeds.append(int(seed) if seed is not None else fallback)
    if not images:
        exc = GenerationFailed("upstream returned no usable image" + (" (every image finished with ERROR)"
                                                                       if entries else ""))
        exc.status = 502
        raise exc

    from ..local.samplers import STABILITY_SAMPLERS

    sent = request.sampler if request else None
    return Result(
        job=job,
        images=images,
        seeds=seeds,
        model=ModelInfo(name=engine, title=engine, source=f"stability-v1:{engine}", kind="remote"),
        sampler=STABILITY_SAMPLERS.get(sent, sent) if sent else "upstream default",
        schedule="Automatic",
        scheduler_class="",
        notes=notes,
    )

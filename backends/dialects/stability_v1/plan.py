"""A v1 request → the Job it asks for. Decisions the reference (docs/reference/hosted_apis.md §A) leaves to us:

- weights become A1111 emphasis in the Job prompt: `{"text": "a cat", "weight": 1.5}` → `(a cat:1.5)`; positive
  prompts are joined with ", ", negative-weight prompts become the negative prompt with |weight|; a weight of 0
  drops the prompt. A1111 syntax inside a text is interpreted too (a superset of v1: plain text stays plain,
  except for brackets), which also makes Job → v1 → Job exact through this server.
- `seed` 0 or absent draws a random seed in 1..4294967295 (`RANDOM_SEEDS`); sample i uses seed + i, and every
  artifact reports its own seed.
- `steps` is 10..50 (the current upstream). `[stability_v1] lenient = true` takes the old 10..150 range and
  clamps values outside it instead of rejecting them.
- `clip_guidance_preset`, `step_schedule_end` and `extras` are accepted and have no local effect.
- image-to-image keeps the init image's size (checked against the engine's rule); masking repaints the masked
  pixels completely and keeps the others exactly (`Planned.composite`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from ...config import Limits
from ...images import UnreadableImage, decode_base64, open_image
from ...job import Job, ModelInfo
from ...samplers import resolve_sampler
from ...styles import StyleStore
from .engines import check_size, default_size
from .errors import bad_request
from .models import (
    GenerationParams,
    ImageToImageRequest,
    MaskingRequest,
    TextPrompt,
    TextToImageRequest,
    form_fields,
    parse_form,
    parse_json,
)
from .options import (
    DEFAULT_CFG,
    DEFAULT_IMAGE_STRENGTH,
    DEFAULT_SAMPLER,
    DEFAULT_STEP_SCHEDULE_START,
    DEFAULT_STEPS,
    RANDOM_SEEDS,
    STEPS_LENIENT,
    STEPS_STRICT,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """What the server's config says about v1 requests."""

    lenient: bool
    max_side: int
    styles: StyleStore
    limits: Limits | None = None  # `[limits]`: uploads past max_upload_bytes / max_image_pixels are refused


@dataclass
class Planned:
    """A parsed v1 request: the Job, the engine it named, whether the answer is a PNG (`Accept: image/png`),
    and for masking the (init, mask) pair the answer is composited over."""

    job: Job
    engine_id: str
    png: bool
    composite: tuple[Image.Image, Image.Image] | None = None


# ----------------------------------------------------------------------------------------- fields


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
    return RANDOM_SEEDS.pick(seed, samples, random_below=1)


def wants_png(accept: str | None) -> bool:
    """`Accept: image/png` (or image/*) first → PNG; blank, application/json, */* or anything else → JSON."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("image/png", "image/*"):
            return True
        if media in ("application/json", "application/*"):
            return False
    return False


def check_png_samples(png: bool, samples: int | None) -> None:
    if png and (samples or 1) > 1:
        raise bad_request(
            f"samples: must be 1 when the Accept header is image/png (received {samples}); "
            "use Accept: application/json for several images",
            "invalid_samples",
        )


def read_image(value: Any, field_name: str, limits: Limits | None = None) -> Image.Image:
    """A multipart file part (bytes) or, tolerated, a base64 string → a loaded PIL image."""
    if value is None or (isinstance(value, (bytes, str)) and not value):
        raise bad_request(f"{field_name}: is required")
    if isinstance(value, str):
        try:
            value = decode_base64(value)
        except ValueError:
            raise bad_request(f"{field_name}: expected an image file", "invalid_mime_type") from None
    try:
        return open_image(value, limits, field_name)
    except UnreadableImage as e:
        raise bad_request(f"{field_name}: not a readable PNG, JPEG or WebP image ({e})",
                          "invalid_mime_type") from None


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


# ----------------------------------------------------------------------------------------- Jobs


def base_job(settings: Settings, info: ModelInfo, req: GenerationParams, width: int, height: int) -> Job:
    prompt, negative = prompts_to_text(req.text_prompts)
    if req.style_preset:
        prompt, negative = settings.styles.apply(prompt, negative, [req.style_preset])
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
        steps=resolve_steps(req.steps, settings.lenient),
        cfg_scale=DEFAULT_CFG if req.cfg_scale is None else float(req.cfg_scale),
        sampler=sampler,
        seed=resolve_seed(req.seed, samples),
        batch_size=samples,
        n_iter=1,
        model=info.title,
        prompt_weighting=True,
    )


def plan_text_to_image(settings: Settings, engine_id: str, info: ModelInfo,
                       body: bytes | str | Mapping[str, Any], accept: str | None) -> Planned:
    req = parse_json(TextToImageRequest, body)
    png = wants_png(accept)
    check_png_samples(png, req.samples)
    w0, h0 = default_size(engine_id, info.family)
    width = w0 if req.width is None else req.width
    height = h0 if req.height is None else req.height
    check_size(engine_id, width, height, max_side=settings.max_side)
    return Planned(base_job(settings, info, req, width, height), engine_id, png)


def plan_image_to_image(settings: Settings, engine_id: str, info: ModelInfo, items: list[tuple[str, Any]],
                        accept: str | None, masking: bool = False) -> Planned:
    files = {k: v for k, v in items if isinstance(v, (bytes, bytearray))}
    fields = form_fields(items)
    for name in ("init_image", "mask_image"):  # a base64 text part is tolerated in place of a file
        if name not in files and isinstance(fields.get(name), str):
            files[name] = fields.pop(name)
    req = parse_form(MaskingRequest if masking else ImageToImageRequest, fields)
    png = wants_png(accept)
    check_png_samples(png, req.samples)
    init = read_image(files.get("init_image"), "init_image", settings.limits)
    check_size(engine_id, init.width, init.height, max_side=settings.max_side, what="init_image")
    job = base_job(settings, info, req, init.width, init.height)
    job.init_image = init.convert("RGB")
    composite = None
    if masking:
        mask_file = files.get("mask_image")
        mask_image = read_image(mask_file, "mask_image", settings.limits) if mask_file else None
        job.mask = mask_from(req.mask_source, init, mask_image)
        job.denoising_strength = 1.0  # masked pixels are replaced completely
        composite = (job.init_image, job.mask)
    else:
        if req.init_image_mode == "STEP_SCHEDULE":
            start = DEFAULT_STEP_SCHEDULE_START if req.step_schedule_start is None else req.step_schedule_start
        else:  # IMAGE_STRENGTH, the default: step_schedule_start = 1 − image_strength
            strength = DEFAULT_IMAGE_STRENGTH if req.image_strength is None else req.image_strength
            start = 1.0 - strength
        job.denoising_strength = float(start)
    return Planned(job, engine_id, png, composite)

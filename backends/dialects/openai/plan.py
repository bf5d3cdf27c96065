"""A parsed Images request → the Job it runs as: the size (a `WxH` rounded to the grid, `auto` the model's native
square, an edit's input size), steps and guidance from `quality`, a prompt style from `style`, the input image and
OpenAI's alpha mask turned into our white-is-repaint mask, `n` images with seeds s, s+1, ..., and the owner."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from PIL import Image

from ...config import Limits
from ...images import UnreadableImage, open_image
from ...job import Job, ModelInfo
from ...styles import StyleStore
from .errors import bad_request, invalid_size
from .models import EditRequest, ImageRequest, VariationRequest
from .options import (
    DEFAULT_SIDE, EDIT_STRENGTH, EXTRA, GRID, HIGH_FIDELITY_STRENGTH, MAX_N, MIN_SIDE, NATIVE_SIDE, RANDOM_SEEDS,
    STRICT_MAX_PROMPT, STRICT_SIZES, STYLE_PRESETS, VARIATION_STRENGTH, Settings, is_dalle, is_gpt_image,
)

_SIZE = re.compile(r"^(\d{1,5})\s*[xX×]\s*(\d{1,5})$")


@dataclass
class Size:
    width: int
    height: int
    asked: str  # what the request said ("auto", "1000x700", ...)

    @property
    def text(self) -> str:
        return f"{self.width}x{self.height}"


def round_to_grid(value: int) -> int:
    return max(GRID, int(round(value / GRID)) * GRID)


def native_size(model: ModelInfo) -> tuple[int, int]:
    side = NATIVE_SIDE.get(model.family or "", DEFAULT_SIDE)
    return side, side


def pick_size(size: Optional[str], model: ModelInfo, limits: Limits, image: Image.Image | None = None) -> Size:
    """`size` → the pixels made: "auto"/none → the input image's size (edits, variations) or the model's native
    square; "WxH" within MIN_SIDE..limits, each side rounded to a multiple of GRID. 400 `invalid_size` otherwise."""
    asked = size or "auto"
    if asked == "auto":
        w, h = image.size if image is not None else native_size(model)
        scale = min(1.0, limits.max_width / w, limits.max_height / h)
        return Size(round_to_grid(w * scale), round_to_grid(h * scale), asked)
    m = _SIZE.match(asked)
    if not m:
        raise invalid_size(f"Invalid size '{asked}': use 'auto' or 'WIDTHxHEIGHT', e.g. '1024x1024'.")
    w, h = int(m.group(1)), int(m.group(2))
    if not (MIN_SIDE <= w <= limits.max_width and MIN_SIDE <= h <= limits.max_height):
        raise invalid_size(f"Invalid size '{asked}': each side must be {MIN_SIDE}..{limits.max_width} (width) and "
                           f"{MIN_SIDE}..{limits.max_height} (height) pixels.")
    return Size(min(round_to_grid(w), limits.max_width), min(round_to_grid(h), limits.max_height), asked)


def check_strict(operation: str, req: ImageRequest, model_name: str) -> None:
    """§1's per-model rules (`[openai] strict = true`): sizes, n for dall-e-3, prompt length, the operations."""
    family = "gpt-image" if is_gpt_image(model_name) else model_name if is_dalle(model_name) else None
    if family is None:
        return
    if family == "dall-e-3" and operation != "generations":
        raise bad_request(f"dall-e-3 does not support {operation}; use dall-e-2 or a GPT image model.", "model")
    if operation == "variations" and family != "dall-e-2":
        raise bad_request("Only dall-e-2 supports variations.", "model")
    sizes = STRICT_SIZES[family]
    if req.size is not None and req.size not in sizes:
        raise invalid_size()
    if family == "dall-e-3" and req.n != 1:
        raise bad_request("Invalid 'n': dall-e-3 only supports n=1.", "n")
    limit = STRICT_MAX_PROMPT[family]
    if len(req.prompt) > limit:
        raise bad_request(f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, "
                          f"but got a string with length {len(req.prompt)} instead.", "prompt",
                          "string_above_max_length")
    if req.response_format is not None and family == "gpt-image":
        raise bad_request("Unknown parameter: 'response_format' (GPT image models always answer base64).",
                          "response_format", "unknown_parameter")


def decode_image(data: bytes, param: str = "image", limits: Limits | None = None) -> Image.Image:
    try:
        return open_image(data, limits, param)
    except UnreadableImage as e:
        raise bad_request(f"Invalid input image: could not read it as png, jpeg or webp ({e}).", param,
                          "invalid_image") from None


def repaint_mask(mask: Image.Image) -> Image.Image:
    """OpenAI's mask (alpha 0 = repaint, opaque = keep) → ours (white = repaint). A mask with no alpha channel is
    read as ours already (white = repaint), as inpainting tools draw it."""
    if mask.mode in ("RGBA", "LA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a == 0 else 0)
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def own_alpha_mask(image: Image.Image) -> Optional[Image.Image]:
    """dall-e-2 without a mask edits the image's own transparent pixels: its alpha as our mask (None if opaque)."""
    if image.mode not in ("RGBA", "LA") and not (image.mode == "P" and "transparency" in image.info):
        return None
    mask = repaint_mask(image)
    return mask if mask.getbbox() is not None else None


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on white where the input is transparent (the transparent part is repainted anyway)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_job(operation: str, req: ImageRequest, model: ModelInfo, model_name: Optional[str], settings: Settings,
           styles: StyleStore, limits: Limits, request_id: str, owner: Optional[str] = None) -> Job:
    if settings.strict and model_name:
        check_strict(operation, req, model_name)
    init_image, mask, strength = None, None, EDIT_STRENGTH
    if operation in ("edits", "variations"):
        source = decode_image(req.images[0], "image", limits)
        init_image = _flatten(source)
        if isinstance(req, EditRequest):
            if req.mask is not None:
                mask_image = decode_image(req.mask, "mask", limits)
                if mask_image.size != source.size:
                    raise bad_request(f"Invalid mask: its size {mask_image.size[0]}x{mask_image.size[1]} must match "
                                      f"the image's {source.size[0]}x{source.size[1]}.", "mask", "invalid_image")
                mask = repaint_mask(mask_image)
            else:
                mask = own_alpha_mask(source)
            strength = req.strength if req.strength is not None else (
                HIGH_FIDELITY_STRENGTH if req.input_fidelity == "high" else EDIT_STRENGTH)
        elif isinstance(req, VariationRequest):
            strength = req.strength if req.strength is not None else VARIATION_STRENGTH
    size = pick_size(req.size, model, limits, init_image)
    if req.n > MAX_N:
        raise bad_request(f"Invalid 'n': at most {MAX_N}.", "n")
    steps, cfg = settings.steps_and_cfg(req.quality)
    prompt, negative = req.prompt, req.negative_prompt
    if req.style and STYLE_PRESETS.get(req.style):
        prompt, negative = styles.apply(prompt, negative, [STYLE_PRESETS[req.style]])
    seed = RANDOM_SEEDS.pick(req.seed, req.n, random_below=0)
    fields = {k: v for k, v in req.model_dump(exclude={"image", "mask"}).items() if v not in (None, "", False)}
    return Job(
        prompt=prompt,
        negative_prompt=negative,
        width=size.width,
        height=size.height,
        steps=int(req.steps or steps),
        cfg_scale=float(req.guidance_scale if req.guidance_scale is not None else cfg),
        sampler=settings.sampler,
        schedule=settings.schedule,
        seed=seed,
        batch_size=req.n,
        model=model.title,
        init_image=init_image,
        mask=mask,
        denoising_strength=float(strength),
        # the key's owner, else the request's `user` (`safety_identifier`): its own kind, so it names no login or key
        owner=owner or (f"openai-user:{req.owner}" if req.owner else None),
        # the original request, for a same-style relay (upstream.py) and the answer (replies.py)
        extra={EXTRA: {"operation": operation, "fields": fields, "model": model_name, "size": size.text,
                       "asked_size": size.asked, "request_id": request_id, "revised_prompt": prompt}},
    )
